"""`s2f bench ...`: speed figures, measured (never asserted in tests).

input: examples/s and MB/s of the tf.data pipeline over prepared shards (int16 PCM, STFT excluded)
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


def matmul_flops_per_second(
    sizes=(1024, 2048), seconds: float = 1.0, dtype: str = "float32"
) -> float:
    """The machine's measured matmul throughput in `dtype` (best of a few square sizes), FLOP/s."""
    import tensorflow as tf

    best = 0.0
    for n in sizes:
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
        f = tf.function(lambda a=a, b=b: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
        f().numpy()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            f().numpy()
            count += 1
        best = max(best, 2.0 * n**3 * count / (time.perf_counter() - start))
    return best


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
        optimizer = keras.optimizers.Adam(1e-4, beta_1=0.5, epsilon=1e-4)
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
) -> dict:
    """The voice-encoder training step at float32 and mixed_bfloat16, and (with PyTorch installed)
    the same network and step in PyTorch at float32 and bfloat16 autocast, NCHW and channels_last.
    All settings are timed in `rounds` interleaved rounds of `steps` / rounds steps each, so a noisy
    neighbour or a frequency change hits every setting alike; figures are seconds per step.

    training_precision is what `train.precision=auto` picks here (`runtime.resolve_precision`);
    speedup_vs_torch_best compares it with PyTorch's fastest setting on this machine.
    flop_utilization = 3 x forward FLOPs (counted from the graph) / step time / the matmul rate of
    the same precision.
    """
    import importlib.util

    from s2f_tf import factory
    from s2f_tf.train import runtime

    training_precision, why = runtime.resolve_precision(config.train.precision)
    if training_precision not in TF_PRECISIONS:
        training_precision = "float32"  # mixed_float16: loss scaling is not timed here
    tf_steps = {p: _tf_train_step(config, batch_size, p, jit_compile) for p in TF_PRECISIONS}
    flops_forward = factory.graph_flops(tf_steps["float32"][1])
    peer = None
    if torch_peer and importlib.util.find_spec("torch") is not None:
        peer = _TorchPeer(config, batch_size)
    rounds = max(1, min(rounds, steps))
    per_round = max(1, steps // rounds)
    try:
        per_step = _interleaved_seconds_per_step(tf_steps, peer, rounds, per_round, warmup)
    finally:
        if peer:
            peer.close()
    measured = rounds * per_round
    matmul = {
        p: matmul_flops_per_second(dtype="bfloat16" if p == "mixed_bfloat16" else "float32")
        for p in TF_PRECISIONS
    }
    step_flops = 3 * flops_forward
    ours = per_step[f"tf/{training_precision}"]
    result = {
        "benchmark": "train",
        "config": config.name,
        "batch_size": batch_size,
        "steps": measured,
        "rounds": rounds,
        "jit_compile": jit_compile,
        "training_precision": training_precision,
        "precision_reason": why,
        "step_seconds": {p: round(per_step[f"tf/{p}"], 4) for p in TF_PRECISIONS},
        "examples_per_second": round(batch_size / ours, 2),
        "bfloat16_speedup_vs_float32": round(
            per_step["tf/float32"] / per_step["tf/mixed_bfloat16"], 2
        ),
        "forward_gflops": round(flops_forward / 1e9, 2),
        "matmul_gflops_per_second": {p: round(v / 1e9, 1) for p, v in matmul.items()},
        "flop_utilization": {
            p: round(step_flops / per_step[f"tf/{p}"] / matmul[p], 3) for p in TF_PRECISIONS
        },
    }
    if peer is None:
        result["torch"] = "not installed (pip install torch==2.13.0 to time the PyTorch peer)"
    else:
        result.update(_torch_figures(per_step, ours))
    return result


def _interleaved_seconds_per_step(
    tf_steps: dict, peer: _TorchPeer | None, rounds: int, per_round: int, warmup: int
) -> dict[str, float]:
    """Seconds per step of every setting ("tf/<precision>", "torch/<setting>"), timed in `rounds`
    interleaved rounds of `per_round` steps (the first round of each after `warmup` steps)."""
    totals: dict[str, float] = {}
    for r in range(rounds):
        first = r == 0
        for p, (step, _) in tf_steps.items():
            totals[f"tf/{p}"] = totals.get(f"tf/{p}", 0.0) + timed(
                step, per_round, warmup if first else 0
            )
        for setting in TORCH_SETTINGS if peer else ():
            totals[f"torch/{setting}"] = totals.get(f"torch/{setting}", 0.0) + peer.seconds(
                setting, per_round, warmup if first else 0
            )
    measured = rounds * per_round
    return {k: v / measured for k, v in totals.items()}


def _torch_figures(per_step: dict[str, float], ours: float) -> dict:
    """The PyTorch peer's step times, its fastest setting and our speedup over it."""
    torch_steps = {s: per_step[f"torch/{s}"] for s in TORCH_SETTINGS}
    best = min(torch_steps, key=torch_steps.get)
    return {
        "torch_step_seconds": {s: round(v, 4) for s, v in torch_steps.items()},
        "torch_best": best,
        "speedup_vs_torch_best": round(torch_steps[best] / ours, 2),
    }
