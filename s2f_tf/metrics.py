"""The figures `s2f evaluate` reports, as plain functions of arrays (numpy; no model, no TF).

  similarity_figures(v_s, v_f), angles     angle, cosine, L2, L1 of unit-normalised features; L2, L1
                                          of raw features as SF2F computes them
  protocol_figures(protocol, v_s, v_f, ...) R@K (cosine, L2, L1) in galleries of G with chance, 1:2
                                          matching (optionally same sex) and the similarity, under
                                          one protocol of s2f_tf/protocols.py (whom a voice is
                                          matched against; identity_mean by default)
  retrieval_figures                       R@K alone (same_clip by default: validation while training)
  confusion, age_bands, attribute_figures the attribute judge's readings: agreement, confusion, r
  bootstrap_interval, mean_intervals      percentile bootstrap over speakers
  group_breakdown                         every per-query figure within each group of a label
  craniofacial_measurements / _figures    distances and indices on iBUG-68 landmarks, r vs random pairing
  mean_squared_laplacian(images)          the fine-detail energy of each image (grey, interior pixels)
  sharpness_figures(decoded, references)  decoded faces' fine-detail energy relative to references
  histogram(values)                       counts for the report's histograms
Per-query functions return one value per query (NaN: not applicable), so the same arrays give the
overall figure, its interval and the per-group figures.
"""

from __future__ import annotations

import numpy as np

from s2f_tf import protocols

KS = (1, 2, 5, 10)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 grey from RGB


def _unit(x: np.ndarray) -> np.ndarray:
    return protocols.unit(x)


def angles(v_s: np.ndarray, v_f: np.ndarray) -> np.ndarray:
    """[N, D] x2 -> [N] degrees between each pair."""
    return np.degrees(np.arccos(np.clip(np.sum(_unit(v_s) * _unit(v_f), axis=1), -1.0, 1.0)))


SF2F_EPS = 1e-6  # torch.nn.PairwiseDistance's eps, added to the difference (SF2F's L1 and L2)


def similarity_figures(v_s: np.ndarray, v_f: np.ndarray) -> dict:
    """[N, D] x2 (rows with a NaN left out) -> mean and std of the angle (deg), the cosine, L2 and L1
    between unit-normalised features, and L2 and L1 between the raw features as SF2F computes them
    (|v_f - v_s + 1e-6|). The mean angle is not the arccos of the mean cosine: both are given."""
    ok = np.all(np.isfinite(v_s), axis=1) & np.all(np.isfinite(v_f), axis=1)
    v_s, v_f = np.asarray(v_s, np.float64)[ok], np.asarray(v_f, np.float64)[ok]
    a, b = _unit(v_s), _unit(v_f)
    raw = v_f - v_s + SF2F_EPS  # torch's PairwiseDistance(face, prediction), as SF2F calls it
    values = {
        "cosine_angle_degrees": angles(v_s, v_f),
        "cosine": np.sum(a * b, axis=1),
        "l2": np.linalg.norm(a - b, axis=1),
        "l1": np.abs(a - b).sum(axis=1),
        "l2_raw": np.linalg.norm(raw, axis=1),
        "l1_raw": np.abs(raw).sum(axis=1),
    }
    if not ok.any():
        return {name: {"mean": float("nan"), "std": float("nan")} for name in values}
    return {name: {"mean": float(v.mean()), "std": float(v.std())} for name, v in values.items()}


def protocol_figures(
    protocol: str,
    v_s: np.ndarray,
    v_f: np.ndarray,
    speakers: np.ndarray,
    gallery_size: int = 100,
    galleries: str = "random",
    canonical: np.ndarray | None = None,
    sex: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[dict, dict, protocols.Verdicts]:
    """Queries v_s [N, D] against the faces v_f [N, D] under one protocol (s2f_tf/protocols.py):
    similarity to the own reference, R@K by cosine, L2 and L1 in galleries of G (the own reference
    and G - 1 other identities; `galleries`: random per query, or SF2F's fixed blocks), 1:2 matching
    (unconstrained; same_sex with `sex` [N]). Returns (figures, per-query arrays, the verdicts)."""
    v = protocols.verdicts(protocol, v_s, v_f, speakers, canonical, seed)
    block, g = protocols.block_of(len(v.identities), gallery_size, galleries)
    retrieval = {"protocol": protocol, "galleries": galleries, "gallery_size": int(g)}
    per_query = {}
    for metric in protocols.METRICS:
        hits = protocols.retrieval_hits(v, metric, KS, block, g, np.random.default_rng(seed))
        retrieval["queries"] = int(np.isfinite(hits[:, 0]).sum())
        retrieval[metric] = {f"R@{k}": _nanmean(hits[:, j]) for j, k in enumerate(KS)}
        if metric == "cosine":
            per_query |= {f"retrieval_R@{k}": hits[:, j] for j, k in enumerate(KS) if k != 2}
    retrieval["chance"] = protocols.chance(KS, g)
    per_query["matching_1:2"] = protocols.matching_outcomes(v)
    matching = {"unconstrained": _matching(per_query["matching_1:2"])}
    if sex is not None:
        per_query["matching_1:2_same_sex"] = protocols.matching_outcomes(v, sex)
        matching["same_sex"] = _matching(per_query["matching_1:2_same_sex"])
    out = {"protocol": protocol, "retrieval": retrieval, "matching": matching}
    if v.references is not None:
        out["similarity"] = similarity_figures(v_s[v.has_own], v.references[v.has_own])
    return out, per_query, v


def _matching(outcomes: np.ndarray) -> dict:
    known = np.isfinite(outcomes)
    return {"accuracy": _nanmean(outcomes), "queries": int(known.sum()), "chance": 0.5}


def retrieval_figures(
    v_s: np.ndarray,
    v_f: np.ndarray,
    speakers: np.ndarray,
    gallery_size: int = 100,
    seed: int = 0,
    protocol: str = "same_clip",
) -> dict:
    """Recall@K by cosine, L1 and L2 in galleries of `gallery_size`, with the chance, under one
    protocol (default same_clip: each query's own clip's face; validation while training uses it)."""
    return protocol_figures(protocol, v_s, v_f, speakers, gallery_size, seed=seed)[0]["retrieval"]


def mean_squared_laplacian(images: np.ndarray) -> np.ndarray:
    """RGB images [N, S, S, 3] (any scale) -> [N]: the mean over interior pixels of the squared
    4-neighbour Laplacian of the grey image, in the images' own units squared. A blur lowers it; an
    image that copies its reference's detail matches the reference's value."""
    from scipy import ndimage

    grey = np.asarray(images, np.float64) @ np.asarray(LUMA)  # [N, S, S]
    lap = np.stack([ndimage.laplace(g) for g in grey])  # [N, S, S]
    return np.mean(np.square(lap[:, 1:-1, 1:-1]), axis=(1, 2))


def sharpness_figures(decoded: np.ndarray, references: dict[str, np.ndarray]) -> dict:
    """Fine-detail energy of decoded faces [N, S, S, 3] relative to each set of reference faces (same
    scale): {name: mean MSL(decoded) / mean MSL(reference)} plus the raw means (1.0: as detailed as
    the reference; the blur of an average face gives a small fraction)."""
    d = mean_squared_laplacian(decoded)
    out = {"decoded_mean_squared_laplacian": float(d.mean())}
    for name, images in references.items():
        r = mean_squared_laplacian(images)
        out[f"{name}_mean_squared_laplacian"] = float(r.mean())
        out[f"relative_to_{name}"] = float(d.mean() / max(r.mean(), 1e-12))
    return out


# --- categorical readings -----------------------------------------------------------------------

AGE_BAND_EDGES = (18.0, 30.0, 45.0, 60.0)  # years: <18, 18-29, 30-44, 45-59, 60+


def age_band_names(edges=AGE_BAND_EDGES) -> list[str]:
    inner = [f"{int(a)}-{int(b) - 1}" for a, b in zip(edges[:-1], edges[1:])]
    return [f"<{int(edges[0])}"] + inner + [f"{int(edges[-1])}+"]


def age_bands(years: np.ndarray, edges=AGE_BAND_EDGES) -> np.ndarray:
    """Ages in years -> band index as float (NaN stays NaN), bands as in age_band_names."""
    years = np.asarray(years, np.float64)
    return np.where(
        np.isfinite(years), np.searchsorted(np.asarray(edges), years, side="right"), np.nan
    )


def confusion(true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Class indices (float; NaN unknown) -> counts [C, C] (rows: true, columns: predicted) and the
    row-normalised matrix (None for a class with no true example)."""
    c = len(classes)
    ok = np.isfinite(true) & np.isfinite(predicted)
    counts = np.zeros((c, c), np.int64)
    np.add.at(counts, (np.asarray(true)[ok].astype(int), np.asarray(predicted)[ok].astype(int)), 1)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = [[float(x) for x in row / n] if n else None for row, n in zip(counts, rows[:, 0])]
    return {"classes": list(classes), "counts": counts.tolist(), "row_normalised": normalised}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the pairs where both are finite; 0.0 when either side is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def attribute_figures(
    classes: dict[str, list[str] | None],
    true_reading: dict[str, np.ndarray],
    decoded_reading: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
) -> dict:
    """How the attribute judge's readings of decoded faces agree with its readings of the true faces.

    classes: per attribute, its class names (categorical; readings are class indices) or None
    (continuous). Categorical: agreement, the judge's own accuracy on the true faces and the confusion
    matrix (rows: the true face's reading, columns: the decoded face's). Continuous: Pearson r, the
    judge's r on true faces; age also gets the age-band confusion.
    """
    out = {}
    for name, names in classes.items():
        t, d, y = true_reading[name], decoded_reading[name], labels[name]
        known = np.isfinite(y)
        if names is not None:
            out[name] = {
                "agreement": float(np.mean(t == d)),
                "classifier_accuracy_on_true_faces": float(np.mean(t[known] == y[known]))
                if known.any()
                else float("nan"),
                "confusion": confusion(t, d, names),
            }
        else:
            out[name] = {
                "pearson_r": pearson(t, d),
                "classifier_r_on_true_faces": pearson(t[known], y[known]),
            }
            if name == "age":
                tb, db = age_bands(t), age_bands(d)
                out[name]["band_agreement"] = float(np.mean(tb == db))
                out[name]["band_confusion"] = confusion(tb, db, age_band_names())
    return out


# --- uncertainty and groups ---------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


def _speaker_draws(count: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, count] speaker indices, each row one resample of the speakers with replacement."""
    return np.random.default_rng(seed).integers(0, count, (resamples, count))


def _percentile_interval(value: float, resampled: np.ndarray, level: float) -> dict:
    """{"value", "low", "high"}: the resampled statistics' central `level` interval (finite ones)."""
    resampled = resampled[np.isfinite(resampled)]
    if not len(resampled):
        return {"value": value, "low": float("nan"), "high": float("nan")}
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return {"value": value, "low": float(low), "high": float(high)}


def bootstrap_interval(
    statistic,
    speakers: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap over SPEAKERS (clips of one speaker are not independent): resample the
    speakers with replacement, take all their clips, recompute statistic(clip indices) -> float.
    Returns {"value" (on all clips), "low", "high"}."""
    unique = np.unique(speakers)
    members = [np.flatnonzero(speakers == s) for s in unique]
    values = [
        statistic(np.concatenate([members[i] for i in picks]))
        for picks in _speaker_draws(len(unique), resamples, seed)
    ]
    value = float(statistic(np.arange(len(speakers))))
    return _percentile_interval(value, np.asarray(values, np.float64), level)


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def mean_intervals(
    per_query: dict[str, np.ndarray],
    speakers: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """{figure: per-query values [N] (NaN: not applicable)} -> {figure: bootstrap interval of the mean}.

    bootstrap_interval's resamples (the same speakers drawn), computed at once: a resample's mean is
    its speakers' sums over their counts of applicable clips, each speaker as often as drawn."""
    unique, member = np.unique(speakers, return_inverse=True)
    s = len(unique)
    picks = _speaker_draws(s, resamples, seed)
    drawn = np.bincount(
        (picks + s * np.arange(resamples)[:, None]).ravel(), minlength=resamples * s
    )
    drawn = drawn.reshape(resamples, s).astype(np.float64)  # [R, S] times each speaker is drawn
    out = {}
    for name, values in per_query.items():
        values = np.asarray(values, np.float64)
        known = np.isfinite(values)
        sums = np.bincount(member, np.where(known, values, 0.0), minlength=s)
        counts = np.bincount(member, known.astype(np.float64), minlength=s)
        num, den = drawn @ sums, drawn @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            means = num / den  # NaN where a resample has no applicable clip
        out[name] = _percentile_interval(_nanmean(values), means, level)
    return out


def group_breakdown(
    per_query: dict[str, np.ndarray],
    speakers: np.ndarray,
    groupings: dict[str, tuple[np.ndarray, list[str]]],
    **kwargs,
) -> dict:
    """Every figure per group: groupings {attribute: (class index per query (NaN unknown), class
    names)} -> {attribute: {class: {"clips", "speakers", figure: interval}}} (empty groups left out)."""
    out = {}
    for attribute, (index, names) in groupings.items():
        out[attribute] = {}
        for k, label in enumerate(names):
            rows = np.flatnonzero(np.asarray(index) == k)
            if not len(rows):
                continue
            entry = {"clips": int(len(rows)), "speakers": int(len(np.unique(speakers[rows])))}
            entry.update(
                mean_intervals({n: v[rows] for n, v in per_query.items()}, speakers[rows], **kwargs)
            )
            out[attribute][label] = entry
    return out


def histogram(
    values: np.ndarray, bins: int = 36, value_range: tuple[float, float] = (0.0, 180.0)
) -> dict:
    counts, edges = np.histogram(
        np.asarray(values)[np.isfinite(values)], bins=bins, range=value_range
    )
    return {"edges": [float(e) for e in edges], "counts": counts.tolist()}


# --- craniofacial measurements (iBUG-68 landmarks) ----------------------------------------------


def _stomion(p):
    return (p[:, 62] + p[:, 66]) / 2  # the lips' meeting point: inner lip centres


def _dist(a, b):
    return np.linalg.norm(a - b, axis=-1)


# name -> (anthropometric definition, function of landmarks [N, 68, 2] -> [N]); iBUG-68 points:
# jaw 0-16 (8 chin), nasion 27, subnasale 33, alae 31/35, eye corners 36/39 and 42/45, mouth
# corners 48/54, upper / lower lip centres 51/57, inner lip centres 62/66.
CRANIOFACIAL = {
    "face_width": ("zy-zy, points 1-15", lambda p: _dist(p[:, 1], p[:, 15])),
    "jaw_width": ("go-go, points 4-12", lambda p: _dist(p[:, 4], p[:, 12])),
    "nose_height": ("n-sn, points 27-33", lambda p: _dist(p[:, 27], p[:, 33])),
    "nose_width": ("al-al, points 31-35", lambda p: _dist(p[:, 31], p[:, 35])),
    "upper_lip_height": ("sn-sto", lambda p: _dist(p[:, 33], _stomion(p))),
    "lateral_upper_lip_heights": (
        "sbal-ls', mean of points 32-50 and 34-52",
        lambda p: (_dist(p[:, 32], p[:, 50]) + _dist(p[:, 34], p[:, 52])) / 2,
    ),
    "vermilion_height": ("ls-li, points 51-57", lambda p: _dist(p[:, 51], p[:, 57])),
    "mouth_width": ("ch-ch, points 48-54", lambda p: _dist(p[:, 48], p[:, 54])),
    "intercanthal_width": ("en-en, points 39-42", lambda p: _dist(p[:, 39], p[:, 42])),
    "nasal_index": (
        "al-al / n-sn",
        lambda p: _dist(p[:, 31], p[:, 35]) / _dist(p[:, 27], p[:, 33]),
    ),
    "intercanthal_index": (
        "en-en / ex-ex",
        lambda p: _dist(p[:, 39], p[:, 42]) / _dist(p[:, 36], p[:, 45]),
    ),
    "vermilion_height_index": (
        "ls-sto / sto-li",
        lambda p: _dist(p[:, 51], _stomion(p)) / _dist(_stomion(p), p[:, 57]),
    ),
    "mouth_face_width_index": (
        "ch-ch / zy-zy",
        lambda p: _dist(p[:, 48], p[:, 54]) / _dist(p[:, 1], p[:, 15]),
    ),
    "mandibular_index": (
        "sto-gn / go-go",
        lambda p: _dist(_stomion(p), p[:, 8]) / _dist(p[:, 4], p[:, 12]),
    ),
}
CRANIOFACIAL_LANDMARKS = 68
RANDOM_PAIRINGS = 200


def craniofacial_measurements(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Landmarks [N, 68, 2] (iBUG-68 order, any common scale) -> {measurement: [N]}."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (CRANIOFACIAL_LANDMARKS, 2):
        raise ValueError(
            f"craniofacial measurements need iBUG-68 landmarks [N, 68, 2], got {landmarks.shape}"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: fn(landmarks) for name, (_, fn) in CRANIOFACIAL.items()}


def craniofacial_figures(
    reference: np.ndarray,
    predicted: np.ndarray,
    speakers: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    pairings: int = RANDOM_PAIRINGS,
    seed: int = 0,
) -> dict:
    """Per measurement: Pearson r between the reference faces' (face to face) and the predicted
    faces' (from the voice) values over clips, with a bootstrap interval over speakers, and the r of
    random pairings (predicted values shuffled across clips: mean and central 95%)."""
    ref, pred = craniofacial_measurements(reference), craniofacial_measurements(predicted)
    rng = np.random.default_rng(seed)
    shuffles = [rng.permutation(len(speakers)) for _ in range(pairings)]
    out = {}
    for name, (definition, _) in CRANIOFACIAL.items():
        a, b = ref[name], pred[name]
        null = np.asarray([pearson(a, b[s]) for s in shuffles])
        out[name] = {
            "definition": definition,
            "pearson_r": bootstrap_interval(
                lambda idx, a=a, b=b: pearson(a[idx], b[idx]), speakers, resamples, seed=seed
            ),
            "random_pairing_r": {
                "mean": float(null.mean()),
                "low": float(np.percentile(null, 2.5)),
                "high": float(np.percentile(null, 97.5)),
            },
        }
    return out


def groupings(classes: dict, names: list[str], values: np.ndarray) -> dict:
    """The dataset's own (true) labels to break figures down by: every categorical attribute, and
    age bands where the data has ages."""
    out = {}
    for j, name in enumerate(names):
        if classes.get(name):
            out[name] = (values[:, j], classes[name])
        elif name == "age":
            out["age_band"] = (age_bands(values[:, j]), age_band_names())
    return out


def agreements(classes: dict, true_reading: dict, decoded_reading: dict) -> dict:
    """Per clip, 1.0 where the judge reads the decoded face as it reads the true one: every
    categorical attribute, and the age band where the data has ages."""
    out = {
        f"{name}_agreement": (true_reading[name] == decoded_reading[name]).astype(np.float64)
        for name, names in classes.items()
        if names
    }
    if "age" in classes and not classes["age"]:
        bands = [age_bands(r["age"]) for r in (true_reading, decoded_reading)]
        out["age_band_agreement"] = (bands[0] == bands[1]).astype(np.float64)
    return out
