"""`s2f bench serve`: what serving over gRPC costs compared with calling the SavedModel in-process.

Starts a `serving.server.DevServer` on free 127.0.0.1 ports, then for each concurrency level runs the
same requests (same waveform, same batch) through `serving.client.GrpcClient`, through a second
DevServer that batches with the shipped serving/batching.config (`server_batching`), and through the
SavedModel's `serving_default` function loaded in this process, from as many threads as the level.
The modes are measured in alternating rounds (in-process, server, server, in-process, ...), so a
machine whose load drifts (other jobs, CPU frequency) biases neither side. Reported:

  latency_overhead   server p50 latency / in-process p50 latency - 1, at the lowest concurrency
  throughput_ratio   server requests/s / in-process requests/s, at the highest concurrency
  batching_throughput_ratio  the same for server_batching
  batching_ceiling_ratio     what perfect batching could give on this device: one in-process call
                     of as many requests as the level (up to max_batch_size), merged and padded as
                     the batching server pads them (`in_process_merged`, same rounds), over the
                     in-process requests/s at that level; batching_efficiency is server_batching's
                     share of that call's rate
  batching_over_one_caller   server_batching requests/s at the highest level over in-process calls
                     from one caller at batch 1 (the lowest level, when it is 1)
  batch_sizes        how many batches the batching server ran at each size (its metrics)

Both run in one process (client, server and baseline share the GIL and the CPU), as the serving
tests do; TF Serving itself is C++ and would add less. What the server adds is roughly a constant per
request, not a fraction: Python gRPC's round trip (~0.2 ms on loopback), the server's and client's
proto work (~0.05 ms), and TF's thread pool waking up after the idle gap every RPC leaves (the
in-process loop calls back to back and keeps it hot; ~0.2-0.3 ms on a 2-core machine). A 4 ms request
(tiny or demo preset, one clip) therefore shows ~15%, a 30 ms one (batch 8) well under 10%.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from s2f_tf import contract

TARGET_OVERHEAD = 0.10


def _stats(latencies: list[float], busy_seconds: float) -> dict:
    if not latencies:
        return {
            "requests": 0,
            "p50_ms": None,
            "p99_ms": None,
            "mean_ms": None,
            "requests_per_second": None,
        }
    ms = np.asarray(latencies) * 1e3
    return {
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "requests_per_second": round(len(latencies) / busy_seconds, 2)
        if busy_seconds > 0
        else None,
    }


def _run(
    call: Callable[[], object],
    concurrency: int,
    count: int,
    deadline: float,
    latencies: list[float],
) -> float:
    """Issues `count` calls from `concurrency` threads (stops issuing at `deadline`); appends each
    call's latency; returns the wall time."""
    lock = threading.Lock()
    issued = [0]
    errors: list[BaseException] = []

    def worker():
        while True:
            with lock:
                if issued[0] >= count or time.monotonic() > deadline or errors:
                    return
                issued[0] += 1
            start = time.perf_counter()
            try:
                call()
            except BaseException as e:  # noqa: BLE001 -- surfaced below
                errors.append(e)
                return
            latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def _in_process_calls(path: str) -> Callable[[np.ndarray], Callable[[], object]]:
    """The SavedModel at `path` loaded in this process: wave [B, N] -> a call of its serving function
    on that batch, the outputs read back as numpy."""
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[contract.SIGNATURE]

    def call_on(wave: np.ndarray) -> Callable[[], object]:
        inputs = {contract.INPUT: tf.constant(wave)}
        return lambda: {k: v.numpy() for k, v in fn(**inputs).items()}

    return call_on


def _client(server, model_name: str, version: int, concurrency: int):
    """A gRPC client of `server` for the measuring: no retries, one slot per concurrent caller."""
    from serving.client import GrpcClient

    return GrpcClient(
        server.grpc_target,
        model_name,
        version=version,
        max_concurrency=concurrency,
        timeout_seconds=60.0,
        retries=0,
    )


def bench_serve(
    model_base_path: str,
    model_name: str = "s2f",
    requests: int = 200,
    concurrency: Sequence[int] = (1, 8),
    batch_size: int = 1,
    samples: int | None = None,
    time_limit_seconds: float = 120.0,
    rounds: int = 4,
    warmup: int = 8,
    seed: int = 0,
    batching_parameters_file: str | None = None,
) -> dict:
    """Measures p50/p99 latency and requests/s over gRPC and in-process at each concurrency level.

    Args:
      model_base_path: `<export_base>/<model_name>`, holding integer version directories (the newest
        is measured).
      model_name: the served name.
      requests: requests per mode and level (split over `rounds` alternating rounds).
      concurrency: levels (threads issuing requests at once); overhead is reported at the lowest,
        throughput ratio at the highest.
      batch_size: clips per request.
      samples: clip length; default the export's clip_samples (s2f_model.json).
      batching_parameters_file: the batching server's BatchingParameters (default: the shipped file).
      time_limit_seconds: bound on the measuring (from when the servers are up); rounds stop
        issuing requests once it has passed.
    Returns a JSON-able dict (see the module docstring for the two headline figures).
    """
    if requests < 1 or batch_size < 1 or not concurrency:
        raise ValueError("requests and batch_size must be >= 1 and concurrency non-empty")
    levels = sorted({int(c) for c in concurrency})
    started = time.monotonic()
    rounds = max(1, min(rounds, requests))
    per_round = math.ceil(requests / rounds)

    from serving.batching import SHIPPED, read_batching_parameters

    batching = read_batching_parameters(batching_parameters_file or SHIPPED)
    with (
        _dev_server(model_base_path, model_name, batch_size, levels[-1]) as server,
        _dev_server(model_base_path, model_name, batch_size, levels[-1], batching) as batcher,
    ):
        version, path, info = _newest_version(server, model_base_path)
        samples = int(samples or info.get("clip_samples") or contract.SAMPLE_RATE)
        rng = np.random.RandomState(seed)
        wave = (rng.randn(batch_size, samples) * 0.05).astype(np.float32)  # [B, N]
        call_on = _in_process_calls(path)
        in_process = call_on(wave)  # the baseline
        merged = {  # perfect batching's ceiling: a level's requests merged into in-process calls
            level: _merged_call(call_on, wave, level, batching) for level in levels if level > 1
        }
        deadline = time.monotonic() + time_limit_seconds  # the servers are loaded and warm
        with (
            _client(server, model_name, version, levels[-1]) as client,
            _client(batcher, model_name, version, levels[-1]) as batched,
        ):
            modes = {
                "in_process": in_process,
                "server": lambda: client.predict(wave),
                "server_batching": lambda: batched.predict(wave),
            }
            results, truncated = _measure_levels(
                modes, merged, levels, warmup, rounds, per_round, deadline
            )
        sizes = _batch_sizes(batcher)
    return _report(
        model_name,
        version,
        info,
        batch_size,
        samples,
        requests,
        rounds,
        results,
        truncated,
        started,
        sizes,
        batching,
    )


def _merged(wave: np.ndarray, level: int, batching) -> tuple[np.ndarray, int]:
    """(the batch the batching server would run for `level` concurrent requests of `wave` [B, N],
    how many requests it holds): as many as fit in max_batch_size, padded to the next allowed
    batch size."""
    count = max(1, min(level, batching.max_batch_size // len(wave)))
    return batching.merge([wave] * count), count


def _merged_call(call_on, wave: np.ndarray, level: int, batching) -> tuple[Callable, int]:
    """(an in-process call of `_merged`'s batch, how many requests it holds)."""
    batch, count = _merged(wave, level, batching)
    return call_on(batch), count


def _batch_sizes(server) -> dict[str, int]:
    """{padded batch size: batches run} of the batching server's serving_default, from its metrics."""
    counts, previous = {}, 0.0
    for family in server.metrics.registry.collect():
        if not family.name.endswith("processed_batch_size"):
            continue
        for sample in family.samples:
            if (
                sample.name.endswith("_bucket")
                and sample.labels.get("op_name") == "serving_default"
            ):
                le = sample.labels["le"]
                if sample.value > previous and le != "+Inf":
                    counts[str(int(float(le)))] = int(sample.value - previous)
                previous = sample.value
    return counts


def _dev_server(
    model_base_path: str, model_name: str, batch_size: int, top_level: int, batching=None
):
    """The development server on a free 127.0.0.1 gRPC port (no REST, no polling for versions),
    sized for `batch_size` clips and `top_level` concurrent requests."""
    from serving.server import AUTO_PORT, DevServer

    return DevServer(
        model_base_path,
        model_name,
        port=AUTO_PORT,
        rest_api_port=0,
        host="127.0.0.1",
        poll_seconds=3600.0,
        max_batch=max(64, batch_size),
        grpc_max_threads=max(16, 2 * top_level),
        batching=batching,
    )


def _newest_version(server, model_base_path: str) -> tuple[int, str, dict]:
    """(version, its directory, its s2f_model.json info) of the newest version the server loaded."""
    if not server.versions():
        raise FileNotFoundError(f"no loadable version under {model_base_path}")
    version = server.versions()[0]
    path = os.path.join(server.model_base_path, str(version))
    return version, path, server._servables[version].info


def _measure_levels(
    modes: dict[str, Callable[[], object]],
    merged: dict[int, tuple[Callable[[], object], int]],
    levels: Sequence[int],
    warmup: int,
    rounds: int,
    per_round: int,
    deadline: float,
) -> tuple[list[dict], bool]:
    """Each level after a warm-up: (the levels' rows, whether any stopped short at the deadline).
    `merged[level]`: (one in-process call of that level's requests merged, how many it holds)."""
    results, truncated = [], False
    for level in levels:
        for call in modes.values():  # warm threads, caches, channel
            _run(call, level, max(warmup, level), deadline + 60.0, [])
        if level in merged:
            _run(merged[level][0], 1, 2, deadline + 60.0, [])
        row, complete = _measure_level(modes, merged.get(level), level, rounds, per_round, deadline)
        truncated = truncated or not complete
        results.append(row)
    return results, truncated


def _measure_level(
    modes: dict[str, Callable[[], object]],
    merged: tuple[Callable[[], object], int] | None,
    level: int,
    rounds: int,
    per_round: int,
    deadline: float,
) -> tuple[dict, bool]:
    """The modes at one concurrency level in alternating rounds, and the merged call after them in
    every round: (its row of figures, whether every request was issued before the deadline)."""
    lat = {m: [] for m in modes}
    busy = {m: 0.0 for m in modes}
    merged_lat, merged_busy = [], 0.0
    for r in range(rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for m in order:
            busy[m] += _run(modes[m], level, per_round, deadline, lat[m])
        if merged is not None:
            call, count = merged
            merged_busy += _run(call, 1, math.ceil(per_round / count), deadline, merged_lat)
    complete = not any(len(lat[m]) < per_round * rounds for m in modes)
    row = {"concurrency": level, **{m: _stats(lat[m], busy[m]) for m in modes}}
    a, b, c = row["in_process"], row["server"], row["server_batching"]
    if a["requests"] and b["requests"]:
        row["latency_overhead_p50"] = round(b["p50_ms"] / a["p50_ms"] - 1, 4)
        row["latency_overhead_p99"] = round(b["p99_ms"] / a["p99_ms"] - 1, 4)
        row["throughput_ratio"] = _ratio(row, "server", row, "in_process")
    if a["requests"] and c["requests"]:
        row["batching_throughput_ratio"] = _ratio(row, "server_batching", row, "in_process")
    if merged_lat and a["requests"] and c["requests"]:
        rate = len(merged_lat) * merged[1] / merged_busy
        row["in_process_merged"] = {
            "calls": len(merged_lat),
            "requests_per_call": merged[1],
            "requests_per_second": round(rate, 2),
        }
        row["batching_ceiling_ratio"] = round(rate / a["requests_per_second"], 4)
        row["batching_efficiency"] = round(c["requests_per_second"] / rate, 4)
    return row, complete


def as_text(result: dict) -> str:
    """`bench_serve`'s result as a terminal reader wants it: a row per level and mode (the merged
    call's rate beside its level), then the headline figures one per line."""
    rows = [f"{'concurrency':>11}  {'mode':<18}{'p50 ms':>10}{'p99 ms':>10}{'requests/s':>12}"]
    for level in result["levels"]:
        for mode in ("in_process", "server", "server_batching"):
            s = level[mode]
            figures = (s["p50_ms"], s["p99_ms"], s["requests_per_second"])
            cells = "".join(
                f"{'-' if v is None else v:>{w}}" for v, w in zip(figures, (10, 10, 12))
            )
            rows.append(f"{level['concurrency']:>11}  {mode:<18}{cells}")
        if "in_process_merged" in level:
            rate = level["in_process_merged"]["requests_per_second"]
            rows.append(f"{level['concurrency']:>11}  {'in_process_merged':<18}{'':>20}{rate:>12}")
    skip = ("levels", "batching_parameters")
    rows += [f"{k:>28}: {v}" for k, v in result.items() if k not in skip]
    return "\n".join(rows)


def _ratio(row: dict, mode: str, base_row: dict, base_mode: str) -> float | None:
    """requests/s of `mode` in `row` over those of `base_mode` in `base_row` (None if either is missing)."""
    a, b = row[mode]["requests_per_second"], base_row[base_mode]["requests_per_second"]
    return round(a / b, 4) if a and b else None


def _report(
    model_name: str,
    version: int,
    info: dict,
    batch_size: int,
    samples: int,
    requests: int,
    rounds: int,
    results: list[dict],
    truncated: bool,
    started: float,
    batch_sizes: dict[str, int],
    batching,
) -> dict:
    """The JSON-able result: every level's row, and the two headline figures."""
    low, high = results[0], results[-1]
    overhead = low.get("latency_overhead_p50")
    return {
        "benchmark": "serve",
        "transport": "grpc",
        "model_name": model_name,
        "version": version,
        "config": info.get("config"),
        "batch_size": batch_size,
        "samples": samples,
        "clip_seconds": contract.seconds(samples, info.get("sample_rate", contract.SAMPLE_RATE)),
        "requests": requests,
        "rounds": rounds,
        "levels": results,
        "latency_overhead": overhead,
        "latency_overhead_concurrency": low["concurrency"],
        "throughput_ratio": high.get("throughput_ratio"),
        "throughput_concurrency": high["concurrency"],
        "batching_throughput_ratio": high.get("batching_throughput_ratio"),
        "batching_ceiling_ratio": high.get("batching_ceiling_ratio"),
        "batching_over_one_caller": _ratio(high, "server_batching", low, "in_process")
        if low["concurrency"] == 1
        else None,
        "batch_sizes": batch_sizes,
        "batching_parameters": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(batching).items()
        },
        "target_overhead": TARGET_OVERHEAD,
        "meets_target": overhead is not None and overhead <= TARGET_OVERHEAD,
        "truncated": truncated,
        "seconds": round(time.monotonic() - started, 2),
        "cpu_count": os.cpu_count(),
    }
