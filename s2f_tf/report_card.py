"""report.html's model card: intended use, data, figures by group, limitations, ethics."""

from __future__ import annotations

import html

from s2f_tf.report_html import _interval, _speakers, _table


def model_card(metrics: dict) -> str:
    data = metrics.get("dataset", {})
    counts = ", ".join(
        f"{k} {v} clips ({_speakers(data.get('speaker_counts', {}).get(k, '?'))})"
        for k, v in data.get("counts", {}).items()
    )
    key, entry = next(iter(metrics["inputs"].items()))
    rows = [
        [
            html.escape(attribute.replace("_", " ")),
            html.escape(g),
            str(v["clips"]),
            _interval(v.get("retrieval_R@1")),
            _interval(v.get("matching_1:2")),
            _interval(v.get("sex_agreement")),
        ]
        for attribute, groups in entry.get("by_group", {}).items()
        for g, v in groups.items()
    ]
    by_group = (
        _table(
            [
                "group by",
                "group",
                "clips",
                "retrieval R@1 (%)",
                "1:2 matching (%)",
                "sex agreement (%)",
            ],
            rows,
        )
        if rows
        else "<p>The data has no group labels.</p>"
    )
    attributes = ", ".join(data.get("attribute_names", [])) or "none"
    synthetic = data.get("source") == "synthetic"
    return f"""
<h3>Intended use</h3><p>Research on what a voice reveals about a face: a canonical (frontal, neutral)
face and a face feature predicted from a few seconds of speech, to be studied in aggregate on held-out
speakers. It is not for identifying, verifying or profiling a person, and its faces are not
portraits of real people: they show correlations the training data holds.</p>
<h3>Data</h3><p>Source <code>{html.escape(str(data.get("source", "?")))}</code>
{
        "(the embedded synthetic corpus: voices and faces drawn from shared hidden attributes,"
        " no real person)"
        if synthetic
        else ""
    };
{html.escape(counts)}; speaker-disjoint splits. Attributes: {html.escape(attributes)}. The decoder's
target: {html.escape(str(data.get("decoder_target", "?")))}.</p>
<h3>Figures by group</h3><p>From the voice ({html.escape(key)}), with {
        html.escape(metrics["definitions"].get("confidence_intervals", "intervals"))
    }; the plots and the other figures are under
<a href="#groups">figures by group</a>.</p>{by_group}
<h3>Limitations</h3><ul>
<li>{
        _speakers(metrics["speakers"])
    } under test: every figure moves by the width of its interval between runs.</li>
<li>Attribute readings come from a small classifier trained on the same data's true faces, not from
people; its own accuracy on true faces bounds every agreement figure.</li>
<li>A voice does not determine a face: the model predicts what is typical for voices like this one, so
it reproduces the training data's demographics and its biases, and does worst on groups the data
holds few of.</li>
{
        "<li>Figures on the synthetic corpus measure the pipeline, not the real-world link"
        " between voice and face.</li>"
        if synthetic
        else ""
    }
</ul>
<h3>Ethical considerations</h3><p>Predicting appearance from voice invites stereotyping by sex, age
and ancestry. Report figures by group, do not deploy the model to infer anyone's appearance or
demographics, obtain consent for voices and faces used in training, and state that outputs are
statistical averages, not likenesses.</p>"""
