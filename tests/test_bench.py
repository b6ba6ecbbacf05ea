"""The benchmark commands run and report their figures (speed itself is never asserted)."""

import ast
import json

import pytest
from conftest import run_s2f


@pytest.mark.slow
def test_bench_input_reports_figures(tiny_corpus):
    r = run_s2f(
        "bench",
        "input",
        f"--data={tiny_corpus}",
        "--json",
        "--steps=3",
        "--batch_size=4",
        "--clip_seconds=1",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (
        out["examples_per_second"] > 0
        and out["megabytes_per_second"] > 0
        and out["pcm_dtype"] == "int16"
    )


@pytest.mark.slow
def test_bench_train_prints_utilization_both_precisions_and_the_peer():
    """The table a user reads: the step's model FLOPs utilisation against the matmul ceiling
    measured on its device, consistent with the printed step time, FLOPs and ceiling."""
    r = run_s2f("bench", "train", "--config=tiny", "--steps=2", "--batch_size=2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = {}
    for line in r.stdout.strip().splitlines():
        key, _, value = line.partition(": ")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    assert out["training_precision"] in ("float32", "mixed_bfloat16")
    assert out["device"].startswith(("CPU ", "GPU ")) and out["step_gflop"] > 0
    # the ceiling is measured in the dtype each precision multiplies in, on the step's device
    assert set(out["matmul_ceiling_tflops"]) == {"float32", "bfloat16"}
    assert all(v > 0 for v in out["matmul_ceiling_tflops"].values())
    for policy, dtype in (("float32", "float32"), ("mixed_bfloat16", "bfloat16")):
        seconds = out["step_seconds"][policy]
        assert seconds > 0
        expected = out["step_gflop"] / seconds / (out["matmul_ceiling_tflops"][dtype] * 1e3)
        assert out["model_flops_utilization"][policy] == pytest.approx(expected, rel=0.05)
    assert out["mfu"] == out["model_flops_utilization"][out["training_precision"]]
    assert out["bfloat16_speedup_vs_float32"] > 0 and "auto" in out["precision_reason"]
    if "torch_best" in out:
        assert set(out["torch_step_seconds"]) == {
            "float32",
            "float32_channels_last",
            "bfloat16",
            "bfloat16_channels_last",
        }
        assert out["speedup_vs_torch_best"] > 0
    else:
        assert "not installed" in out["torch"]
