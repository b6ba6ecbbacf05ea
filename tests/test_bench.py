"""The benchmark commands run and report their figures (speed itself is never asserted)."""

import json

from conftest import run_s2f


def test_bench_input_reports_figures(tiny_corpus):
  r = run_s2f("bench", "input", f"--data={tiny_corpus}", "--json", "--steps=3", "--batch_size=4",
              "--clip_seconds=1")
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out["examples_per_second"] > 0 and out["megabytes_per_second"] > 0 and out["pcm_dtype"] == "int16"


def test_bench_train_reports_utilization():
  r = run_s2f("bench", "train", "--config=tiny", "--json", "--steps=2", "--batch_size=2")
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out["forward_gflops"] > 0 and 0 < out["flop_utilization"] and out["matmul_gflops_per_second"] > 0
  assert "speedup_vs_torch" in out or "torch" in out
