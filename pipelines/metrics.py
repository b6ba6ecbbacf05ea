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
Runners that report no metrics (Beam's Dask runner): the driver counts the same figures from the
shards' summaries (and says so in its log line).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

NAMESPACE = "s2f.prepare"
LENGTHS = "clip_milliseconds"


def tally(summary: dict[str, Any], sample_rate: int) -> tuple[Counter, list[int]]:
    """One shard's summary (process_shard's) -> (its counters, its clips' lengths in ms)."""
    split = summary["split"]
    counters: Counter = Counter({f"shards.{split}": 1})
    lengths = []
    for row in summary["items"]:
        if row["status"] == "ok":
            lengths.append(round(1000 * row["samples"] / sample_rate))
        else:
            counters[f"failed.{row['reason']}"] += 1
            counters[f"failed_items.{split}"] += 1
    counters[f"clips_written.{split}"] += len(lengths)
    counters[f"milliseconds_written.{split}"] += sum(lengths)
    return counters, lengths


def count_shard(summary: dict[str, Any], sample_rate: int) -> None:
    """Inside a Beam step: adds one shard's figures to the run's metrics."""
    from apache_beam.metrics import Metrics

    counters, lengths = tally(summary, sample_rate)
    for name, value in counters.items():
        if value:
            Metrics.counter(NAMESPACE, name).inc(value)
    distribution = Metrics.distribution(NAMESPACE, LENGTHS)
    for ms in lengths:
        distribution.update(ms)


def from_summaries(summaries: list[dict[str, Any]], sample_rate: int) -> dict[str, Any]:
    """The same figures, counted by the driver from the shards' summaries: for runners that report
    no metrics (Beam's Dask runner)."""
    counters: Counter = Counter()
    lengths: list[int] = []
    for summary in summaries:
        shard_counters, shard_lengths = tally(summary, sample_rate)
        counters.update(shard_counters)
        lengths += shard_lengths
    return _figures(
        {name: value for name, value in counters.items() if value},
        {LENGTHS: (len(lengths), sum(lengths), min(lengths), max(lengths))} if lengths else {},
    )


def collect(result) -> dict[str, Any] | None:
    """A finished PipelineResult -> its figures (committed values where the runner commits them,
    else attempted ones; summed over the steps that report a name), or None when the runner
    reports no metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except NotImplementedError:
        return None
    counters: Counter = Counter()
    for c in found["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] += int(value or 0)
    distributions: dict[str, tuple] = {}
    for d in found["distributions"]:
        v = d.committed if d.committed is not None else d.attempted
        if v is None or not v.count:
            continue
        old = distributions.get(d.key.metric.name, (0, 0, v.min, v.max))
        distributions[d.key.metric.name] = (
            old[0] + v.count,
            old[1] + v.sum,
            min(old[2], v.min),
            max(old[3], v.max),
        )
    return _figures({n: v for n, v in counters.items() if v}, distributions)


def _figures(counters: dict[str, int], distributions: dict[str, tuple]) -> dict[str, Any]:
    return {
        "counters": dict(sorted(counters.items())),
        "distributions": {
            name: {"count": n, "sum": total, "min": low, "max": high, "mean": round(total / n, 1)}
            for name, (n, total, low, high) in distributions.items()
        },
    }


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
