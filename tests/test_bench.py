"""The benchmark commands run and report their figures (speed itself is never asserted)."""

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
def test_bench_train_reports_both_precisions_and_the_peer():
    r = run_s2f("bench", "train", "--config=tiny", "--json", "--steps=2", "--batch_size=2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["forward_gflops"] > 0 and out["training_precision"] in ("float32", "mixed_bfloat16")
    for policy in ("float32", "mixed_bfloat16"):
        assert out["step_seconds"][policy] > 0 and out["flop_utilization"][policy] > 0
        assert out["matmul_gflops_per_second"][policy] > 0
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
