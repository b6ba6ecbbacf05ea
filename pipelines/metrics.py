"""Beam metrics of a prepare run: what was written and what failed, live on the runner's own
monitoring (Dataflow's job page, Flink's and Spark's metrics) while the job runs, printed at the
end and kept in dataset.json (`prepare_metrics`).

Namespace `s2f.prepare`; every shard reports, also one an earlier run finished (read back from its
.done.json), so the figures are always those of the whole dataset:
  clips_written.<split>         clips written to the split's shards
  milliseconds_written.<split>  their audio, in milliseconds (counters are integers)
  failed.<reason>               items that failed, by typed reason (manifest.jsonl has each one)
  failed_items.<split>          items that failed, by split
  shards.<split>                shards complete
  clip_milliseconds             distribution of the written clips' lengths (count, min, max, sum)
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "s2f.prepare"
LENGTHS = "clip_milliseconds"


def count_shard(summary: dict[str, Any], sample_rate: int) -> None:
    """Inside a Beam step: adds one shard's summary (process_shard's) to the run's metrics."""
    from apache_beam.metrics import Metrics

    split = summary["split"]
    lengths = Metrics.distribution(NAMESPACE, LENGTHS)
    clips = milliseconds = 0
    for row in summary["items"]:
        if row["status"] == "ok":
            ms = round(1000 * row["samples"] / sample_rate)
            clips, milliseconds = clips + 1, milliseconds + ms
            lengths.update(ms)
        else:
            Metrics.counter(NAMESPACE, f"failed.{row['reason']}").inc()
            Metrics.counter(NAMESPACE, f"failed_items.{split}").inc()
    Metrics.counter(NAMESPACE, f"clips_written.{split}").inc(clips)
    Metrics.counter(NAMESPACE, f"milliseconds_written.{split}").inc(milliseconds)
    Metrics.counter(NAMESPACE, f"shards.{split}").inc()


def collect(result) -> dict[str, Any]:
    """A finished PipelineResult -> {'counters': {name: int}, 'distributions': {name: {count, min,
    max, sum, mean}}}: committed values where the runner commits them, else attempted ones; summed
    over the steps that report a name."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters: dict[str, int] = {}
    for c in found["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    distributions: dict[str, dict[str, float]] = {}
    for d in found["distributions"]:
        value = d.committed if d.committed is not None else d.attempted
        if value is None or not value.count:
            continue
        old = distributions.get(d.key.metric.name)
        merged = {"count": value.count, "sum": value.sum, "min": value.min, "max": value.max}
        if old:
            merged = {
                "count": old["count"] + value.count,
                "sum": old["sum"] + value.sum,
                "min": min(old["min"], value.min),
                "max": max(old["max"], value.max),
            }
        distributions[d.key.metric.name] = {
            **merged,
            "mean": round(merged["sum"] / merged["count"], 1),
        }
    return {"counters": dict(sorted(counters.items())), "distributions": distributions}


def describe(metrics: dict[str, Any]) -> str:
    """One line for the log: clips and seconds written by split, failures by reason, clip lengths."""
    counters = metrics.get("counters", {})

    def by(prefix: str) -> dict[str, int]:
        return {n[len(prefix) :]: v for n, v in counters.items() if n.startswith(prefix)}

    seconds = by("milliseconds_written.")
    written = ", ".join(
        f"{split} {n} ({seconds.get(split, 0) / 1000:.1f} s)"
        for split, n in by("clips_written.").items()
    )
    failed = ", ".join(f"{reason} {n}" for reason, n in by("failed.").items()) or "none"
    line = f"written {written or 'nothing'}; failed {failed}"
    lengths = metrics.get("distributions", {}).get(LENGTHS)
    if lengths:
        line += (
            f"; clip length {lengths['min'] / 1000:.2f}-{lengths['max'] / 1000:.2f} s, "
            f"mean {lengths['mean'] / 1000:.2f} s"
        )
    return line
