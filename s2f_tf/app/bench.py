"""`s2f bench ...`: speed figures, measured (never asserted in tests).

input: examples/s and MB/s of the tf.data pipeline over prepared shards (int16 PCM, STFT excluded)
train: the voice-encoder training step per precision, its model FLOPs utilisation against the
       device's own measured matmul ceiling (CPU or GPU), and the PyTorch peer when installed
"""

from __future__ import annotations

import time

from s2f_tf import contract


def bench_input(
    data_dir: str,
    split: str,
    batch_size: int,
    clip_samples: int,
    steps: int = 50,
    warmup: int = 10,
    fields=("pcm", "speaker"),
) -> dict:
    """Runs the training input pipeline (random crop, shuffle, repeat) and times `steps` batches."""
    from s2f_tf.data.dataset import InputOptions, make_dataset

    options = InputOptions(
        batch_size=batch_size, clip_samples=clip_samples, training=True, fields=fields
    )
    it = iter(make_dataset(data_dir, split, options))
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    nbytes = 0
    for _ in range(steps):
        batch = next(it)
        nbytes += sum(int(v.numpy().nbytes) for v in batch.values())
    seconds = time.perf_counter() - start
    return {
        "benchmark": "input",
        "examples_per_second": round(steps * batch_size / seconds, 1),
        "megabytes_per_second": round(nbytes / seconds / 1e6, 1),
        "batch_size": batch_size,
        "clip_samples": clip_samples,
        "clip_seconds": contract.seconds(clip_samples),
        "steps": steps,
        "fields": list(fields),
        "pcm_dtype": "int16",
    }


def step_device() -> str:
    """Where TensorFlow places an unpinned op, so where the benchmark's step runs: "/GPU:0" when a
    GPU is visible, else "/CPU:0" (the step is one replica: one device)."""
    import tensorflow as tf

    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"


def describe_device(device: str) -> str:
    """One line naming `device`: a GPU's model and compute capability, or the CPU's model, its
    logical cores and the instruction sets that decide its matmul rates."""
    import os

    import tensorflow as tf

    if device.startswith("/GPU"):
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        capability = ".".join(str(c) for c in details.get("compute_capability") or ()) or "?"
        return f"GPU {details.get('device_name', '?')} (compute capability {capability})"
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"CPU {model}, {os.cpu_count()} logical cores, {' '.join(isa) or 'no AVX2'}"


def compute_dtype(policy: str) -> str:
    """The dtype a Keras precision policy multiplies in (mixed_bfloat16 -> bfloat16)."""
    import keras

    return keras.mixed_precision.Policy(policy).compute_dtype


def matmul_call(n: int, dtype: str, device: str):
    """(a call that multiplies two n x n matrices in `dtype` on `device` and waits for the result,
    its FLOPs)."""
    import tensorflow as tf

    with tf.device(device):
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
    f = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))

    def call():
        with tf.device(device):
            f().numpy()

    return call, 2.0 * n**3


# Square matmul sizes the ceiling is measured at: a CPU peaks at 1-2k, a GPU needs 8k to fill.
MATMUL_SIZES = {"CPU": (1024, 2048), "GPU": (4096, 8192)}


def timed(step, steps: int, warmup: int) -> float:
    """Seconds for `steps` calls of `step` after `warmup` calls (shared by the TF and PyTorch sides)."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


TF_PRECISIONS = ("float32", "mixed_bfloat16")
TORCH_SETTINGS = ("float32", "float32_channels_last", "bfloat16", "bfloat16_channels_last")


def _tf_train_step(config, batch_size: int, policy: str, jit_compile: bool):
    """The voice-encoder training step (waveform -> in-graph STFT -> Table 1 -> loss -> Adam) built
    under `policy`; returns (step, forward concrete function)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from s2f_tf import factory, losses
    from s2f_tf.train.trainer import make_optimizer

    keras.mixed_precision.set_global_policy(policy)
    try:
        samples = config.audio.clip_samples
        front_end = factory.build_front_end(config, validate=False)
        encoder = factory.build_voice_encoder(config)
        wave = tf.constant(
            (np.random.RandomState(0).randn(batch_size, samples) * 0.1).astype(np.float32)
        )
        target = tf.constant(
            np.random.RandomState(1).randn(batch_size, config.feature_dim).astype(np.float32)
        )
        encoder(front_end(wave[:1]))
        optimizer = make_optimizer(config, config.optimizer.learning_rate, policy)
        optimizer.build(encoder.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    forward = tf.function(lambda w: encoder(front_end(w), training=False))

    @tf.function(jit_compile=jit_compile)
    def train_step(w, t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                losses.normalized_l2_per_example(t, encoder(front_end(w), training=True))
            )
        grads = tape.gradient(loss, encoder.trainable_variables)
        optimizer.apply(grads, encoder.trainable_variables)
        return loss

    return (lambda: train_step(wave, target).numpy()), forward.get_concrete_function(
        tf.TensorSpec([batch_size, samples], tf.float32)
    )


class _TorchPeer:
    """The PyTorch peer in its own process (its thread pools and TensorFlow's never share one), kept
    running so that its timings interleave with ours: one line 'SETTING STEPS WARMUP' in, seconds out."""

    def __init__(self, config, batch_size: int):
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s2f_tf.app.bench_torch", config.to_json(), str(batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @classmethod
    def start(cls, config, batch_size: int) -> _TorchPeer | None:
        """The peer, or None when PyTorch is not installed."""
        import importlib.util

        return cls(config, batch_size) if importlib.util.find_spec("torch") else None

    def seconds(self, setting: str, steps: int, warmup: int) -> float:
        self.proc.stdin.write(f"{setting} {steps} {warmup}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch peer exited (status {self.proc.wait()})")
        return float(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def bench_train(
    config,
    batch_size: int,
    steps: int = 10,
    warmup: int = 3,
    jit_compile: bool = True,
    torch_peer: bool = True,
    rounds: int = 3,
    matmul_seconds: float = 1.0,
) -> dict:
    """The voice-encoder training step at float32 and mixed_bfloat16, and (with PyTorch installed)
    the same network and step in PyTorch at float32 and bfloat16 autocast, NCHW and channels_last.
    All settings, and the matmul ceilings, are timed in `rounds` interleaved rounds (`steps` / rounds
    steps, about `matmul_seconds` of matmuls), so a noisy neighbour or a frequency change hits every
    figure alike; figures are seconds per step.

    The step runs on one device, the one TensorFlow places it on (the first GPU, else the CPU).
    model_flops_utilization (MFU) of a precision = the step's model FLOPs / its step time / the same
    device's measured square-matmul rate in the dtype that precision multiplies in (float32,
    bfloat16). The step's FLOPs are 3 x the forward graph's, counted by TF's graph profiler
    (`factory.graph_flops`: convolutions and matmuls; element-wise ops and the STFT not counted).

    training_precision is what `train.precision=auto` picks here (`runtime.resolve_precision`);
    speedup_vs_torch_best compares it with PyTorch's fastest setting on this machine.
    """
    from s2f_tf import factory
    from s2f_tf.train import runtime

    training_precision, why = runtime.resolve_precision(config.train.precision)
    if training_precision not in TF_PRECISIONS:
        training_precision = "float32"  # mixed_float16: loss scaling is not timed here
    device = step_device()
    tf_steps = {p: _tf_train_step(config, batch_size, p, jit_compile) for p in TF_PRECISIONS}
    step_flops = 3 * factory.graph_flops(tf_steps["float32"][1])
    rounds = max(1, min(rounds, steps))
    per_round = max(1, steps // rounds)
    matmuls = {
        d: _matmul_for_rounds(d, device, matmul_seconds / rounds)
        for d in sorted({compute_dtype(p) for p in TF_PRECISIONS})
    }
    peer = _TorchPeer.start(config, batch_size) if torch_peer else None
    try:
        per_call = _interleaved_seconds_per_call(
            _train_timers(tf_steps, matmuls, peer, per_round), rounds, warmup
        )
    finally:
        if peer:
            peer.close()
    ceiling, per_step, mfu = _utilization(per_call, matmuls, step_flops)
    ours = per_step[f"tf/{training_precision}"]
    result = {
        "benchmark": "train",
        "config": config.name,
        "device": describe_device(device),
        "batch_size": batch_size,
        "steps": rounds * per_round,
        "rounds": rounds,
        "jit_compile": jit_compile,
        "training_precision": training_precision,
        "precision_reason": why,
        "mfu": mfu[training_precision],
        "step_seconds": {p: round(per_step[f"tf/{p}"], 4) for p in TF_PRECISIONS},
        "examples_per_second": round(batch_size / ours, 2),
        "bfloat16_speedup_vs_float32": round(
            per_step["tf/float32"] / per_step["tf/mixed_bfloat16"], 2
        ),
        "model_flops_utilization": mfu,
        "step_gflop": round(step_flops / 1e9, 2),
        "flops_counted": "3 x the forward graph's (TF graph profiler: convolutions and matmuls)",
        "matmul_ceiling_tflops": {d: round(v / 1e12, 3) for d, v in ceiling.items()},
        "matmul_size": {d: n for d, (_, _, n, _) in matmuls.items()},
    }
    if peer is None:
        result["torch"] = "not installed (pip install torch==2.13.0 to time the PyTorch peer)"
    else:
        result.update(_torch_figures(per_step, ours))
    return result


def _utilization(per_call: dict, matmuls: dict, step_flops: float) -> tuple[dict, dict, dict]:
    """(matmul ceiling per dtype in FLOP/s, seconds per step of each step setting, MFU per
    precision) from the seconds per call of every timer."""
    ceiling = {d: flops / per_call[f"matmul/{d}"] for d, (_, flops, _, _) in matmuls.items()}
    per_step = {k: v for k, v in per_call.items() if not k.startswith("matmul/")}
    mfu = {
        p: round(step_flops / per_step[f"tf/{p}"] / ceiling[compute_dtype(p)], 3)
        for p in TF_PRECISIONS
    }
    return ceiling, per_step, mfu


def _train_timers(tf_steps: dict, matmuls: dict, peer, per_round: int) -> dict:
    """What bench_train times in each round: "tf/<precision>", "matmul/<dtype>", "torch/<setting>"
    -> (seconds(calls, warmup), calls per round)."""
    timers = {f"tf/{p}": _timer(step, per_round) for p, (step, _) in tf_steps.items()}
    timers.update({f"matmul/{d}": _timer(c, calls) for d, (c, _, _, calls) in matmuls.items()})
    for setting in TORCH_SETTINGS if peer else ():
        timers[f"torch/{setting}"] = (lambda n, w, s=setting: peer.seconds(s, n, w), per_round)
    return timers


def _matmul_for_rounds(dtype: str, device: str, seconds: float):
    """The device's fastest square matmul size in `dtype` (MATMUL_SIZES, a short probe each) ->
    (call, its FLOPs, n, calls that take about `seconds`)."""
    kind = "GPU" if device.startswith("/GPU") else "CPU"
    best = None
    for n in MATMUL_SIZES[kind]:
        call, flops = matmul_call(n, dtype, device)
        call()
        seconds_per_call = timed(call, 3, 0) / 3
        if best is None or flops / seconds_per_call > best[1] / best[3]:
            best = (call, flops, n, seconds_per_call)
    call, flops, n, seconds_per_call = best
    return call, flops, n, max(2, round(seconds / seconds_per_call))


def _timer(call, count: int):
    """(seconds for n calls of `call` after w warm-up calls, `count` calls per round)."""
    return (lambda n, w: timed(call, n, w)), count


def _interleaved_seconds_per_call(timers: dict, rounds: int, warmup: int) -> dict[str, float]:
    """Seconds per call of every timer (name -> (seconds(n, warmup), calls per round)), timed in
    `rounds` interleaved rounds (the first round of each after `warmup` calls)."""
    totals: dict[str, float] = {}
    for r in range(rounds):
        for name, (seconds, count) in timers.items():
            totals[name] = totals.get(name, 0.0) + seconds(count, warmup if r == 0 else 0)
    return {name: totals[name] / (rounds * count) for name, (_, count) in timers.items()}


def _torch_figures(per_step: dict[str, float], ours: float) -> dict:
    """The PyTorch peer's step times, its fastest setting and our speedup over it."""
    torch_steps = {s: per_step[f"torch/{s}"] for s in TORCH_SETTINGS}
    best = min(torch_steps, key=torch_steps.get)
    return {
        "torch_step_seconds": {s: round(v, 4) for s, v in torch_steps.items()},
        "torch_best": best,
        "speedup_vs_torch_best": round(torch_steps[best] / ours, 2),
    }
