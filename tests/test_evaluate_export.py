"""Evaluation figures against hand computations, the evaluate command end to end, and the
SavedModel export: atomic integer versions, signature, warmup file, reload == in-process."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_s2f
from s2f_tf import evaluate as ev
from s2f_tf import contract, export
from s2f_tf.workdir import load_trained_model


def test_similarity_by_hand():
  v_f = np.array([[1.0, 0.0], [0.0, 2.0]])
  v_s = np.array([[1.0, 1.0], [0.0, 5.0]])
  s = ev.similarity_figures(v_s, v_f)
  assert s["cosine_angle_degrees"]["mean"] == pytest.approx(22.5)
  assert s["l2"]["mean"] == pytest.approx(np.linalg.norm([1 - 2 ** -0.5, -(2 ** -0.5)]) / 2)


def test_retrieval_perfect_random_and_chance():
  rng = np.random.default_rng(0)
  v_f = rng.standard_normal((30, 16))
  speakers = np.arange(30)
  perfect = ev.retrieval_figures(v_f + 1e-3, v_f, speakers, gallery_size=10)
  assert perfect["gallery_size"] == 10 and perfect["chance"]["R@1"] == pytest.approx(0.1)
  assert all(perfect[m]["R@1"] == 1.0 for m in ("cosine", "l2", "l1"))
  noise = ev.retrieval_figures(rng.standard_normal((30, 16)), v_f, speakers, gallery_size=10)
  assert noise["cosine"]["R@10"] == 1.0 and noise["cosine"]["R@1"] < 0.5


def test_galleries_hold_own_face_and_other_speakers_only():
  speakers = np.array([0, 0, 1, 1, 2, 3, 4])
  gal = ev.galleries(speakers, 4)
  assert gal.shape == (7, 4)
  for i, row in enumerate(gal):
    assert row[0] == i
    others = speakers[row[1:]]
    assert speakers[i] not in others and len(set(others)) == 3


def test_attribute_classifier_learns_from_images():
  rng = np.random.default_rng(1)
  sex = rng.integers(0, 2, 256).astype(np.float32)
  size = rng.uniform(0, 1, 256).astype(np.float32)
  images = np.zeros((256, 16, 16, 3), np.uint8)
  images[sex == 1, :, :8, 0] = 255                       # "female" faces: red left half
  images[..., 2] = (size * 255).astype(np.uint8)[:, None, None]
  values = np.stack([sex, size], 1)
  predict = ev.train_attribute_classifier(images, values, ["sex", "size"], steps=150)
  out = ev.attribute_figures(["sex", "size"], predict, images[:64], images[:64], values[:64])
  assert out["sex"]["agreement"] == 1.0 and out["sex"]["classifier_accuracy_on_true_faces"] > 0.95
  assert out["size"]["classifier_r_on_true_faces"] > 0.9 and out["size"]["pearson_r"] > 0.99
  flipped = ev.attribute_figures(["sex", "size"], predict, images[:64], 255 - images[:64], values[:64])
  assert flipped["sex"]["agreement"] < 1.0


def test_evaluate_command_writes_metrics_grid_and_report(tiny_trained_workdir, tiny_corpus, tmp_path):
  out = str(tmp_path / "eval")
  r = run_s2f("evaluate", f"--workdir={tiny_trained_workdir}", f"--data={tiny_corpus}", f"--eval_dir={out}", "--json")
  assert r.returncode == 0, r.stderr[-3000:]
  metrics = json.loads(r.stdout.strip().splitlines()[-1])
  assert set(metrics["inputs"]) == {"1s", "0.5s"}
  entry = metrics["inputs"]["1s"]
  assert {"cosine", "l2", "l1", "chance", "gallery_size"} <= set(entry["retrieval"])
  assert "sex" in entry["attributes"]
  for name in ("metrics.json", "faces.png", "report.html"):
    assert os.path.getsize(os.path.join(out, name)) > 100
  assert "data:image/png;base64," in open(os.path.join(out, "report.html")).read()


def test_export_reload_matches_and_versions(tiny_trained_workdir, tmp_path):
  base = str(tmp_path / "exports")
  r = run_s2f("export", f"--workdir={tiny_trained_workdir}", f"--export_base={base}", "--model_name=s2f")
  assert r.returncode == 0, r.stderr[-3000:]
  path = r.stdout.strip().splitlines()[-1]
  assert path == os.path.join(base, "s2f", "1")
  assert sorted(os.listdir(os.path.join(base, "s2f"))) == ["1"]             # no temporary left behind
  info = json.load(open(os.path.join(path, "assets.extra", contract.MODEL_INFO_FILE)))
  assert info["min_samples"] == 4000 and info["image_size"] == 32
  warmup = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", contract.WARMUP_FILE)))
  assert 1 <= len(warmup) <= 1000
  from tensorflow_serving.apis import prediction_log_pb2
  log = prediction_log_pb2.PredictionLog.FromString(warmup[0].numpy())
  assert log.predict_log.request.inputs["waveform"].dtype == tf.float32.as_datatype_enum
  # reload and compare with the in-process model
  model, config = load_trained_model(tiny_trained_workdir)
  fn = tf.saved_model.load(path).signatures["serving_default"]
  wave = (np.random.RandomState(3).randn(3, 7000) * 0.1).astype(np.float32)     # short: tiled in-graph
  got, want = fn(waveform=tf.constant(wave)), model(wave)
  np.testing.assert_allclose(got["face_feature"], want["face_feature"], atol=1e-4, rtol=1e-4)
  assert got["face_image"].dtype == tf.uint8 and got["face_image"].shape == (3, 32, 32, 3)
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
    fn(waveform=tf.constant(np.full((1, 8000), np.nan, np.float32)))
  with pytest.raises(tf.errors.InvalidArgumentError, match="too short"):
    fn(waveform=tf.zeros([1, 100]))
  # saved_model_cli lists the signature
  import subprocess
  import sys
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  shown = subprocess.run([cli, "show", "--dir", path, "--tag_set", "serve", "--signature_def",
                          "serving_default"], capture_output=True, text=True, timeout=120)
  assert "inputs['waveform']" in shown.stdout and "outputs['face_image']" in shown.stdout
  # a second export is version 2; an existing version is never overwritten
  assert export.export_model(model, config, base, "s2f", check=False).endswith("/2")
  with pytest.raises(FileExistsError):
    export.export_model(model, config, base, "s2f", version=2)
