"""report.html: `s2f evaluate`'s figures as one self-contained page (plots inline, no network).

render_report(metrics, faces_png) reads only metrics.json's content (evaluate.py makes it) and the
faces grid; plots are drawn with matplotlib (the `report` extra: without it, tables only; figure
objects, the Agg canvas, no pyplot state) and embedded as PNG data URIs. Sections: headline
figures with their intervals, retrieval, 1:2 matching, every protocol side by side (whom a voice
is matched against: s2f_tf/protocols.py), feature angles, attributes (confusion matrices as the
paper's Fig. 4), craniofacial measurements (the paper's Table 4), decoded faces, figures by group,
and a model card (s2f_tf/report_card.py). Building blocks: s2f_tf/report_html.py.
"""

from __future__ import annotations

import base64
import datetime
import html

import numpy as np

from s2f_tf.report_card import model_card
from s2f_tf.report_html import (
    COLOURS,
    KS,
    _figure,
    _img,
    _interval,
    _NoFigure,
    _pct,
    _speakers,
    _table,
)

# --- sections ------------------------------------------------------------------------------------

HEADLINE = (
    ("retrieval_R@1", "retrieval R@1 (%)", "R@1"),
    ("retrieval_R@5", "retrieval R@5 (%)", "R@5"),
    ("retrieval_R@10", "retrieval R@10 (%)", "R@10"),
    ("matching_1:2", "1:2 matching (%)", 0.5),
    ("matching_1:2_same_sex", "1:2 matching, same sex (%)", 0.5),
    ("same_clip_retrieval_R@1", "retrieval R@1, same clip (%)", "R@1"),
    ("same_clip_matching_1:2", "1:2 matching, same clip (%)", 0.5),
    ("sex_agreement", "sex agreement (%)", None),
    ("age_band_agreement", "age-band agreement (%)", None),
    ("image_retrieval_R@1", "image-space R@1 (%)", "R@1"),
    ("angle_degrees", "angle (degrees)", None),
)


def _headline(metrics: dict) -> str:
    """Rows: the headline figures, a categorical attribute's agreement also per true class;
    columns: each voice input, face to face, chance."""
    columns = [(f"from the voice, {html.escape(k)}", e) for k, e in metrics["inputs"].items()]
    columns.append(("face to face", metrics.get("face_to_face", {})))
    first = next(iter(metrics["inputs"].values()))["retrieval"]
    rows = []
    for name, label, chance in HEADLINE:
        cis = [e.get("confidence_intervals", {}) for _, e in columns]
        if not any(name in ci for ci in cis):
            continue
        cells = [_interval(ci.get(name), percent=name != "angle_degrees") for ci in cis]
        level = first["chance"][chance] if isinstance(chance, str) else chance
        rows.append([label] + cells + [_pct(level)])
        rows += _per_class_rows(name, [e.get("by_group", {}) for _, e in columns])
    return (
        f"<p>Each figure with its {html.escape(metrics['definitions'].get('confidence_intervals', ''))} "
        f"in brackets. {_protocol(metrics)} Retrieval ranks the own reference among "
        f"G={first['gallery_size']} faces (it and one of each of G-1 other identities); rows marked "
        "same clip match each voice against its own clip's face instead (optimistic).</p>"
        + _table(["figure"] + [c for c, _ in columns] + ["chance"], rows)
    )


def _per_class_rows(name: str, groups: list[dict]) -> list[list[str]]:
    """`<attribute>_agreement` among the clips of each of the attribute's true classes (the data's
    labels), one row per class; none for other figures. groups: each column's by_group."""
    if not name.endswith("_agreement"):
        return []
    attribute = name.removesuffix("_agreement")
    by_class = [g.get(attribute, {}) for g in groups]
    classes = {c: entry["clips"] for g in by_class for c, entry in g.items()}
    return [
        [f"&nbsp;&nbsp;among {html.escape(c)} ({clips} clips)"]
        + [_interval(g.get(c, {}).get(name)) for g in by_class]
        + [""]
        for c, clips in classes.items()
    ]


def _retrieval(metrics: dict) -> str:
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for (key, entry), colour in zip(metrics["inputs"].items(), COLOURS):
        r = entry["retrieval"]
        for metric, style in (("cosine", "-o"), ("l2", "--s"), ("l1", ":^")):
            ax.plot(
                KS,
                [100 * r[metric][f"R@{k}"] for k in KS],
                style,
                color=colour,
                label=f"{key} {metric}",
            )
    r = next(iter(metrics["inputs"].values()))["retrieval"]
    ax.plot(
        KS,
        [100 * r["chance"][f"R@{k}"] for k in KS],
        "k-",
        lw=2,
        label=f"chance (G={r['gallery_size']})",
    )
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K (%)")
    ax.set_xticks(KS)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    rows = []
    for key, entry in metrics["inputs"].items():
        r = entry["retrieval"]
        for metric in ("cosine", "l2", "l1"):
            rows.append([html.escape(key), metric] + [_pct(r[metric][f"R@{k}"]) for k in KS])
        rows.append(
            [html.escape(key), f"chance (G={r['gallery_size']})"]
            + [_pct(r["chance"][f"R@{k}"]) for k in KS]
        )
    return _img(fig, "recall at K against chance") + _table(
        ["input", "metric"] + [f"R@{k} (%)" for k in KS], rows
    )


def _matching(metrics: dict) -> str:
    fig = _figure(5.0, 3.0)
    ax = fig.add_subplot()
    labels, values, lows, highs = [], [], [], []
    for key, entry in metrics["inputs"].items():
        ci = entry.get("confidence_intervals", {})
        for name, label in (
            ("matching_1:2", "unconstrained"),
            ("matching_1:2_same_sex", "same sex"),
        ):
            if name in ci:
                labels.append(f"{key}\n{label}")
                values.append(100 * ci[name]["value"])
                lows.append(100 * (ci[name]["value"] - ci[name]["low"]))
                highs.append(100 * (ci[name]["high"] - ci[name]["value"]))
    x = np.arange(len(labels))
    ax.bar(
        x, values, yerr=[lows, highs], capsize=4, color=[COLOURS[i % 2] for i in range(len(labels))]
    )
    ax.axhline(50, color="k", lw=1.5, ls="--", label="chance")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    return (
        f"<p>Given a voice, pick its face out of two: its own reference and another identity's "
        "(every other identity in turn); with a same-sex distractor the sex cue alone cannot help. "
        f"{_protocol(metrics)}</p>" + _img(fig, "1:2 matching accuracy")
    )


def _protocol(metrics: dict) -> str:
    name = metrics.get("protocol", "same_clip")
    text = metrics["definitions"].get(f"protocol/{name}", "")
    return f"Protocol <code>{html.escape(name)}</code>" + (
        f": {html.escape(text)}." if text else "."
    )


def _protocols(metrics: dict) -> str:
    """Every protocol's figures side by side, and SSS's verification and retrieval mAP."""
    rows, sss = [], []
    for key, entry in metrics["inputs"].items():
        for name, p in entry.get("protocols", {}).items():
            r, m = p["retrieval"], p["matching"]
            cos = p.get("similarity", {}).get("cosine", {}).get("mean")
            rows.append(
                [html.escape(key), f"<code>{html.escape(name)}</code>"]
                + [
                    f"{_pct(r['cosine'][f'R@{k}'])} <small>({_pct(r['chance'][f'R@{k}'])})</small>"
                    for k in (1, 5, 10)
                ]
                + [_pct(m.get(g, {}).get("accuracy")) for g in ("unconstrained", "same_sex")]
                + ["–" if cos is None else f"{cos:.3f}"]
            )
            if "verification_auc" in p:
                auc, mean_ap = p["verification_auc"], p["retrieval_map"]
                sss.append(
                    [html.escape(key)]
                    + [_pct(auc.get(g)) for g in ("unconstrained", "same_sex")]
                    + [f"{_pct(mean_ap['value'])} <small>({_pct(mean_ap['chance'])})</small>"]
                )
    if not rows:
        return "<p>These figures predate the protocols: every figure is same clip.</p>"
    definitions = "".join(
        f"<li><code>{html.escape(k.split('/', 1)[1])}</code>: {html.escape(v)}</li>"
        for k, v in metrics["definitions"].items()
        if k.startswith("protocol/")
    )
    return (
        f"<p>Whom a voice is matched against.</p><ul>{definitions}</ul>"
        + _table(
            [
                "input",
                "protocol",
                "R@1 (%)",
                "R@5 (%)",
                "R@10 (%)",
                "1:2 (%)",
                "1:2 same sex (%)",
                "mean cosine",
            ],
            rows,
        )
        + "<p>identity_face, as Seeking the Shape of Sound reports it: verification AUC over every "
        "voice-face pair, and retrieval mAP (chance in brackets).</p>"
        + _table(["input", "verification AUC (%)", "same sex (%)", "retrieval mAP (%)"], sss)
    )


def _angles(metrics: dict) -> str:
    entries = list(metrics["inputs"].items())
    fig = _figure(3.4 * len(entries), 2.8)
    for i, (key, entry) in enumerate(entries):
        ax = fig.add_subplot(1, len(entries), i + 1)
        for name, label, colour in (
            ("own_face", "own face", COLOURS[0]),
            ("other_speakers_faces", "other speakers' faces", COLOURS[1]),
        ):
            h = entry.get("angles", {}).get(name)
            if h:
                edges = np.asarray(h["edges"])
                ax.stairs(h["counts"], edges, fill=True, alpha=0.5, color=colour, label=label)
        ax.set_title(f"{key}: angle between v_s and v_f", fontsize=9)
        ax.set_xlabel("degrees")
        ax.legend(fontsize=7)
    rows = [
        [
            html.escape(k),
            f"{e['similarity']['cosine_angle_degrees']['mean']:.2f} ± "
            f"{e['similarity']['cosine_angle_degrees']['std']:.2f}",
            f"{e['similarity']['l2']['mean']:.3f} ± {e['similarity']['l2']['std']:.3f}",
            f"{e['similarity']['l1']['mean']:.2f} ± {e['similarity']['l1']['std']:.2f}",
        ]
        + [
            f"{e['similarity'][n]['mean']:.3f} ± {e['similarity'][n]['std']:.3f}"
            if n in e["similarity"]
            else "–"
            for n in ("cosine", "l2_raw", "l1_raw")
        ]
        for k, e in entries
    ]
    return (
        _img(fig, "feature angle histograms")
        + f"<p>To the own reference. {_protocol(metrics)} The mean angle is not the arccos of the "
        "mean cosine; raw L2 / L1 as SF2F computes them (features not normalised).</p>"
        + _table(["input", "angle (deg)", "L2", "L1", "cosine", "raw L2", "raw L1"], rows)
    )


def _heatmap(ax, block: dict, title: str) -> None:
    matrix = np.array(
        [
            [np.nan] * len(block["classes"]) if row is None else row
            for row in block["row_normalised"]
        ]
    )
    ax.imshow(np.nan_to_num(matrix), vmin=0, vmax=1, cmap="Blues")
    names = [c if len(c) <= 14 else c[:13] + "…" for c in block["classes"]]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for (i, j), v in np.ndenumerate(matrix):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > 0.6 else "black",
            )
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("true face's reading", fontsize=8)
    ax.set_xlabel("decoded face's reading", fontsize=8)


def _attributes(metrics: dict) -> str:
    key, entry = next(iter(metrics["inputs"].items()))
    voice, f2f = entry.get("attributes", {}), metrics.get("face_to_face", {}).get("attributes", {})
    if not voice:
        return "<p>The data has no attributes: no attribute figures.</p>"
    parts, rows = [], []
    for name, figures in voice.items():
        block = (
            "confusion"
            if "confusion" in figures
            else "band_confusion"
            if "band_confusion" in figures
            else None
        )
        if block:
            fig = _figure(7.0, 3.3)
            _heatmap(fig.add_subplot(1, 2, 1), figures[block], f"{name}: from the voice ({key})")
            if name in f2f and block in f2f[name]:
                _heatmap(fig.add_subplot(1, 2, 2), f2f[name][block], f"{name}: face to face")
            parts.append(_img(fig, f"{name} confusion matrices"))
        if "agreement" in figures:
            rows.append(
                [
                    html.escape(name),
                    "agreement (%)",
                    _pct(figures["agreement"]),
                    _pct(f2f.get(name, {}).get("agreement")),
                    _pct(figures["classifier_accuracy_on_true_faces"]),
                ]
            )
        else:
            rows.append(
                [
                    html.escape(name),
                    "Pearson r",
                    f"{figures['pearson_r']:.2f}",
                    f"{f2f.get(name, {}).get('pearson_r', float('nan')):.2f}",
                    f"r {figures['classifier_r_on_true_faces']:.2f}",
                ]
            )
    return (
        "<p>An attribute classifier trained on the training split's true faces reads the true face and "
        "the decoded face; rows of each matrix are normalised (rows: the true face's reading).</p>"
        + "".join(parts)
        + _table(
            [
                "attribute",
                "figure",
                f"from the voice ({html.escape(key)})",
                "face to face",
                "classifier on true faces",
            ],
            rows,
        )
    )


def _craniofacial(metrics: dict) -> str:
    key, entry = next(iter(metrics["inputs"].items()))
    cf = entry.get("craniofacial")
    if not cf:
        return "<p>The decoder's landmarks are not the iBUG-68 layout: no craniofacial measurements.</p>"
    names = list(cf)
    r = np.array([cf[n]["pearson_r"]["value"] for n in names])
    lo = np.array([cf[n]["pearson_r"]["low"] for n in names])
    hi = np.array([cf[n]["pearson_r"]["high"] for n in names])
    fig = _figure(6.6, 0.28 * len(names) + 1.0)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(
        y,
        r,
        xerr=[np.nan_to_num(r - lo), np.nan_to_num(hi - r)],
        capsize=3,
        color=COLOURS[0],
        label="voice vs face to face",
    )
    ax.scatter(
        [cf[n]["random_pairing_r"]["high"] for n in names],
        y,
        marker="|",
        s=120,
        color="k",
        label="random pairing, 97.5%",
    )
    ax.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("Pearson r")
    ax.legend(fontsize=7, loc="lower right")
    rows = [
        [
            n.replace("_", " "),
            html.escape(cf[n]["definition"]),
            _interval(cf[n]["pearson_r"], False, 2),
            f"{cf[n]['random_pairing_r']['mean']:.2f} <small>[{cf[n]['random_pairing_r']['low']:.2f}, "
            f"{cf[n]['random_pairing_r']['high']:.2f}]</small>",
        ]
        for n in names
    ]
    return (
        f"<p>Measured on the decoder's landmarks: faces decoded from the voice ({html.escape(key)}) "
        "against faces decoded from the true feature, over the test clips.</p>"
        + _img(fig, "craniofacial correlations")
        + _table(["measurement", "landmarks", "r", "random pairing r"], rows)
    )


def _fidelity(metrics: dict) -> str:
    rows = []
    sources = [("face to face (true feature)", metrics.get("face_to_face"))]
    sources += [(f"from the voice, {key}", entry) for key, entry in metrics["inputs"].items()]
    for label, entry in sources:
        if not entry or "image_retrieval" not in entry:
            continue
        r, sh = entry["image_retrieval"], entry["sharpness"]
        sex = entry.get("attributes", {}).get("sex", {}).get("agreement")
        rows.append(
            [html.escape(label)]
            + [
                f"{_pct(r['cosine'][f'R@{k}'])} <small>({_pct(r['chance'][f'R@{k}'])})</small>"
                for k in (1, 5, 10)
            ]
            + [
                f"{sh.get('relative_to_targets', float('nan')):.2f}",
                f"{sh.get('relative_to_input_faces', float('nan')):.2f}",
                _pct(sex),
            ]
        )
    gallery = metrics.get("face_to_face", {}).get("image_retrieval", {}).get("gallery_size", "")
    return (
        f"<p>Image-space retrieval: each decoded face, re-encoded by the frozen face encoder, ranked among "
        f"the gallery's true faces (G={gallery}; chance in brackets). Sharpness: the decoded faces' "
        "fine-detail energy (mean squared Laplacian) relative to the decoder's targets and to the clips' "
        "faces.</p>"
        + _table(
            [
                "decoded from",
                "R@1",
                "R@5",
                "R@10",
                "sharpness vs targets",
                "vs clips' faces",
                "sex agreement (%)",
            ],
            rows,
        )
    )


GROUP_FIGURES = (
    ("retrieval_R@1", "retrieval R@1"),
    ("matching_1:2", "1:2 matching"),
    ("matching_1:2_same_sex", "1:2 same sex"),
    ("sex_agreement", "sex agreement"),
)


def _groups(metrics: dict) -> str:
    key, entry = next(iter(metrics["inputs"].items()))
    by_group = entry.get("by_group", {})
    if not by_group:
        return "<p>The data has no group labels: no breakdown.</p>"
    parts = []
    for attribute, groups in by_group.items():
        names = list(groups)
        figures = [
            (n, label)
            for n, label in GROUP_FIGURES
            if any(np.isfinite(groups[g].get(n, {}).get("value", np.nan)) for g in names)
        ]
        fig = _figure(max(6.0, 0.5 * len(names) * len(figures) + 2), 3.2)
        ax = fig.add_subplot()
        width = 0.8 / max(len(figures), 1)
        for i, (name, label) in enumerate(figures):
            ci = [groups[g].get(name, {}) for g in names]
            v = np.array([c.get("value", np.nan) for c in ci]) * 100
            err = [
                np.nan_to_num(v - np.array([c.get("low", np.nan) for c in ci]) * 100),
                np.nan_to_num(np.array([c.get("high", np.nan) for c in ci]) * 100 - v),
            ]
            ax.bar(
                np.arange(len(names)) + i * width,
                v,
                width,
                yerr=err,
                capsize=3,
                color=COLOURS[i],
                label=label,
            )
        ax.set_xticks(
            np.arange(len(names)) + width * (len(figures) - 1) / 2,
            [f"{g}\n({_speakers(groups[g]['speakers'])})" for g in names],
            fontsize=7,
        )
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title(f"by {attribute.replace('_', ' ')} (from the voice, {key})", fontsize=9)
        ax.legend(
            fontsize=7,
            ncol=len(figures),
            loc="lower center",
            bbox_to_anchor=(0.5, 1.08),
            frameon=False,
        )
        parts.append(_img(fig, f"figures by {attribute}"))
        rows = [
            [
                html.escape(attribute),
                html.escape(g),
                str(groups[g]["clips"]),
                str(groups[g]["speakers"]),
            ]
            + [_interval(groups[g].get(n)) for n, _ in GROUP_FIGURES]
            + [_interval(groups[g].get("angle_degrees"), percent=False)]
            for g in names
        ]
        parts.append(
            _table(
                ["group by", "group", "clips", "speakers"]
                + [label + " (%)" for _, label in GROUP_FIGURES]
                + ["angle (deg)"],
                rows,
                "wide",
            )
        )
    return (
        "<p>Every figure over the clips of one group of the dataset's own labels, with its bootstrap "
        "interval over that group's speakers. Differences between groups show whom the model serves "
        "worse; small groups have wide intervals.</p>" + "".join(parts)
    )


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;font-size:14px}
table.wide td,table.wide th{font-size:12px} small{color:#666} img.plot{display:block;margin:0.8em 0}
h2{margin-top:1.6em;border-bottom:2px solid #ccc} nav a{margin-right:1em}"""

SECTIONS = (
    ("headline", "Headline figures"),
    ("retrieval", "Speech-to-face retrieval"),
    ("matching", "1:2 matching"),
    ("protocols", "Protocols side by side"),
    ("angles", "Feature angles"),
    ("attributes", "Attributes"),
    ("craniofacial", "Craniofacial measurements"),
    ("fidelity", "Decoded faces"),
    ("groups", "Figures by group"),
    ("model-card", "Model card"),
)


def render_report(metrics: dict, faces_png: bytes) -> str:
    """metrics.json's content + the faces grid (PNG bytes) -> one self-contained HTML page."""
    image = base64.b64encode(faces_png).decode()
    body = {
        "headline": _headline(metrics),
        "retrieval": _retrieval(metrics),
        "matching": _matching(metrics),
        "protocols": _protocols(metrics),
        "angles": _angles(metrics),
        "attributes": _attributes(metrics),
        "craniofacial": _craniofacial(metrics),
        "fidelity": _fidelity(metrics)
        + "<p>Per row: the clip's face, the decoder's target, the face decoded "
        "from the true face feature, and the face predicted from the voice alone.</p>"
        f'<img class="faces" src="data:image/png;base64,{image}" alt="faces">',
        "groups": _groups(metrics),
        "model-card": model_card(metrics),
    }
    nav = "".join(f'<a href="#{anchor}">{title}</a>' for anchor, title in SECTIONS)
    if isinstance(_figure(1, 1), _NoFigure):
        nav = f"<p>The plots need matplotlib: <code>pip install 's2f[report]'</code></p>{nav}"
    sections = "".join(
        f'<section id="{anchor}"><h2>{title}</h2>{body[anchor]}</section>'
        for anchor, title in SECTIONS
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>s2f evaluation</title>
<style>{STYLE}</style></head><body><h1>Speech2Face evaluation</h1>
<p>{metrics["clips"]} held-out clips from {metrics["speakers"]} speakers never seen in training
(split <code>{html.escape(metrics["split"])}</code>, config <code>{html.escape(metrics["config"])}</code>),
{datetime.date.today().isoformat()}.</p><nav>{nav}</nav>{sections}</body></html>"""
