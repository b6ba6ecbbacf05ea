"""Evaluation figures against hand computations, the evaluate command end to end, and the
SavedModel export: atomic integer versions, signature, warmup file, reload == in-process."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_s2f

from s2f_tf import contract, export, metrics, protocols
from s2f_tf import evaluate as ev
from s2f_tf.workdir import load_trained_model


def test_similarity_by_hand():
    v_f = np.array([[1.0, 0.0], [0.0, 2.0]])
    v_s = np.array([[1.0, 1.0], [0.0, 5.0]])
    s = metrics.similarity_figures(v_s, v_f)
    assert s["cosine_angle_degrees"]["mean"] == pytest.approx(22.5)
    assert s["l2"]["mean"] == pytest.approx(np.linalg.norm([1 - 2**-0.5, -(2**-0.5)]) / 2)


def test_retrieval_perfect_random_and_chance():
    rng = np.random.default_rng(0)
    v_f = rng.standard_normal((30, 16))
    speakers = np.arange(30)
    perfect = metrics.retrieval_figures(v_f + 1e-3, v_f, speakers, gallery_size=10)
    assert perfect["gallery_size"] == 10 and perfect["chance"]["R@1"] == pytest.approx(0.1)
    assert all(perfect[m]["R@1"] == 1.0 for m in ("cosine", "l2", "l1"))
    noise = metrics.retrieval_figures(rng.standard_normal((30, 16)), v_f, speakers, gallery_size=10)
    assert noise["cosine"]["R@10"] == 1.0 and noise["cosine"]["R@1"] < 0.5


def test_block_galleries_cover_the_first_identities():
    block, g = protocols.block_of(7, 4, "random")
    assert g == 4 and (block == 0).all()
    block, g = protocols.block_of(9, 4, "blocks")  # 2 whole blocks of 4; the 9th identity: none
    assert g == 4 and block.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, -1]
    block, g = protocols.block_of(3, 100, "blocks")  # fewer identities than a block: one block
    assert g == 3 and block.tolist() == [0, 0, 0]


def test_mean_squared_laplacian_and_sharpness_by_hand():
    image = np.zeros((1, 5, 5, 3))
    image[0, 2, 2] = 1.0  # one white pixel: grey 1.0 (the luma weights sum to 1)
    # interior (3 x 3) Laplacian: -4 at the centre, +1 at its 4 neighbours, 0 at the 4 corners
    assert metrics.mean_squared_laplacian(image)[0] == pytest.approx((16 + 4) / 9)
    red = np.zeros((1, 5, 5, 3))
    red[0, 2, 2, 0] = 1.0  # grey 0.299: the energy scales with its square
    assert metrics.mean_squared_laplacian(red)[0] == pytest.approx(0.299**2 * 20 / 9)
    flat = np.full((2, 8, 8, 3), 0.7)
    assert np.all(metrics.mean_squared_laplacian(flat) == 0)
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 255, (4, 16, 16, 3))
    blurred = (
        sharp + np.roll(sharp, 1, 1) + np.roll(sharp, 1, 2) + np.roll(sharp, (1, 1), (1, 2))
    ) / 4
    figures = metrics.sharpness_figures(blurred, {"targets": sharp, "same": blurred})
    assert figures["relative_to_same"] == pytest.approx(1.0)
    assert 0.0 < figures["relative_to_targets"] < 0.5  # a 2 x 2 box blur keeps < half the energy
    assert figures["relative_to_targets"] == pytest.approx(
        figures["decoded_mean_squared_laplacian"] / figures["targets_mean_squared_laplacian"]
    )


def test_image_space_retrieval_of_decoded_faces():
    """fidelity_figures re-encodes decoded faces and ranks them among the true faces' features."""
    rng = np.random.default_rng(3)
    faces = rng.uniform(0, 255, (12, 8, 8, 3))
    speakers = np.arange(12) // 2

    class Models:  # a "face encoder" that reads the pixels as the feature
        def encode_images(self, images):
            return np.asarray(images, np.float64).reshape(len(images), -1) - 127.5

    test = {"v_f": Models().encode_images(faces), "speaker": speakers}
    exact = ev.fidelity_figures(Models(), faces, test, {"targets": faces}, gallery_size=4)
    assert (
        exact["image_retrieval_same_clip"]["cosine"]["R@1"] == 1.0
        and exact["image_retrieval"]["gallery_size"] == 4
        and exact["image_retrieval"]["protocol"] == "identity_mean"
    )
    # identity-level, each face is matched against its speaker's other (unrelated) face: far from 1
    assert exact["image_retrieval"]["cosine"]["R@1"] < 0.75
    assert exact["image_retrieval"]["chance"]["R@1"] == pytest.approx(0.25)
    assert exact["sharpness"]["relative_to_targets"] == pytest.approx(1.0)
    grey = np.full_like(faces, 127.5) + rng.normal(
        0, 1, faces.shape
    )  # the average face, no identity
    blur = ev.fidelity_figures(Models(), grey, test, {"targets": faces}, gallery_size=4)
    assert (
        blur["image_retrieval_same_clip"]["cosine"]["R@1"] < 0.75
        and blur["sharpness"]["relative_to_targets"] < 0.01
    )


def test_attribute_classifier_learns_from_images():
    rng = np.random.default_rng(1)
    sex = rng.integers(0, 2, 256).astype(np.float32)
    group = rng.integers(0, 3, 256).astype(np.float32)
    size = rng.uniform(0, 1, 256).astype(np.float32)
    images = np.zeros((256, 16, 16, 3), np.uint8)
    images[sex == 1, :, :8, 0] = 255  # "female" faces: red left half
    images[..., 1] = (group * 120).astype(np.uint8)[:, None, None]
    images[..., 2] = (size * 255).astype(np.uint8)[:, None, None]
    values = np.stack([sex, group, size], 1)
    values[:10, 1] = np.nan  # unknown labels are left out of the loss
    classes = {"sex": ["male", "female"], "group": ["a", "b", "c"], "size": None}
    predict = ev.train_attribute_classifier(images, values, classes, steps=200)
    reading = predict(images[:64])
    assert set(np.unique(reading["group"])) <= {0.0, 1.0, 2.0}
    labels = {name: values[:64, j] for j, name in enumerate(classes)}
    out = metrics.attribute_figures(classes, reading, reading, labels)
    assert out["sex"]["agreement"] == 1.0 and out["sex"]["classifier_accuracy_on_true_faces"] > 0.95
    assert out["group"]["classifier_accuracy_on_true_faces"] > 0.95
    assert np.trace(np.array(out["group"]["confusion"]["counts"])) == 64
    assert out["size"]["classifier_r_on_true_faces"] > 0.9 and out["size"]["pearson_r"] > 0.99
    flipped = metrics.attribute_figures(classes, reading, predict(255 - images[:64]), labels)
    assert flipped["sex"]["agreement"] < 1.0


@pytest.mark.slow
def test_evaluate_command_writes_metrics_grid_and_report(
    tiny_trained_workdir, tiny_corpus, tmp_path
):
    out = str(tmp_path / "eval")
    r = run_s2f(
        "evaluate",
        f"--workdir={tiny_trained_workdir}",
        f"--data={tiny_corpus}",
        f"--eval_dir={out}",
        "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result["inputs"]) == {"1s", "0.5s"}
    entry = result["inputs"]["1s"]
    assert {"cosine", "l2", "l1", "chance", "gallery_size"} <= set(entry["retrieval"])
    assert "sex" in entry["attributes"]
    # the decoded faces' fidelity, from the voice and from the true feature (face to face)
    f2f = result["face_to_face"]
    for block in (f2f, entry):
        assert block["image_retrieval"]["gallery_size"] == entry["retrieval"]["gallery_size"]
        assert 0.0 <= block["image_retrieval"]["cosine"]["R@1"] <= 1.0
        assert (
            block["sharpness"]["relative_to_targets"] > 0
            and "relative_to_input_faces" in block["sharpness"]
        )
    assert "sex" in f2f["attributes"]
    # the field's protocols, with intervals and per-group figures
    assert {"unconstrained", "same_sex"} <= set(entry["matching"])
    assert 0.0 <= entry["matching"]["unconstrained"]["accuracy"] <= 1.0
    for name in ("sex", "ancestry"):
        assert len(entry["attributes"][name]["confusion"]["counts"]) == len(
            result["dataset"]["attribute_classes"][name]
        )
    assert "band_confusion" in entry["attributes"]["age"]
    assert set(entry["craniofacial"]) == set(metrics.CRANIOFACIAL)
    ci = entry["confidence_intervals"]["retrieval_R@1"]
    assert (
        ci["low"] <= ci["value"] <= ci["high"]
        and ci["value"] == entry["retrieval"]["cosine"]["R@1"]
    )
    # identity-level by default; every protocol reported, same clip under its own name
    assert entry["protocol"] == result["protocol"] == "identity_mean"
    assert set(entry["protocols"]) == set(protocols.NAMES)
    assert {"verification_auc", "retrieval_map"} <= set(entry["protocols"]["identity_face"])
    assert "same_clip_retrieval_R@1" in entry["confidence_intervals"]
    assert (
        "image_retrieval_same_clip" in f2f
        and "Protocols side by side" in open(os.path.join(out, "report.html")).read()
    )
    assert {"sex", "ancestry", "age_band"} <= set(entry["by_group"]) and "sex_agreement" in f2f[
        "confidence_intervals"
    ]
    assert sum(g["clips"] for g in entry["by_group"]["sex"].values()) == result["clips"]
    # face to face: age-band agreement, and sex agreement among each sex's clips in the headline
    assert "age_band_agreement" in f2f["confidence_intervals"]
    sex, group = next(iter(f2f["by_group"]["sex"].items()))
    assert 0.0 <= group["sex_agreement"]["value"] <= 1.0
    headline = open(os.path.join(out, "report.html")).read().split("<h2")[1]
    assert f"among {sex} ({group['clips']} clips)" in headline and "age-band agreement" in headline
    for name in ("metrics.json", "faces.png", "report.html"):
        assert os.path.getsize(os.path.join(out, name)) > 100
    report = open(os.path.join(out, "report.html")).read()
    assert "data:image/png;base64," in report and "face to face (true feature)" in report
    from PIL import Image

    assert Image.open(os.path.join(out, "faces.png")).size[0] == 4 * 4 * 32  # 4 columns, 32 px x 4


@pytest.mark.slow
def test_export_reload_matches_and_versions(tiny_trained_workdir, tmp_path):
    base = str(tmp_path / "exports")
    r = run_s2f(
        "export", f"--workdir={tiny_trained_workdir}", f"--export_base={base}", "--model_name=s2f"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    path = r.stdout.strip().splitlines()[-1]
    assert path == os.path.join(base, "s2f", "1")
    assert sorted(os.listdir(os.path.join(base, "s2f"))) == ["1"]  # no temporary left behind
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
    wave = (np.random.RandomState(3).randn(3, 7000) * 0.1).astype(
        np.float32
    )  # short: tiled in-graph
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
    shown = subprocess.run(
        [cli, "show", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "inputs['waveform']" in shown.stdout and "outputs['face_image']" in shown.stdout
    # nothing in it needs XLA where it is served (the decoder's training stage samples with XLA)
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString(
        open(os.path.join(path, "saved_model.pb"), "rb").read()
    )
    functions = saved.meta_graphs[0].graph_def.library.function
    assert functions and not [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]
    # a second export is version 2; an existing version is never overwritten
    assert export.export_model(model, config, base, "s2f", check=False).endswith("/2")
    with pytest.raises(FileExistsError):
        export.export_model(model, config, base, "s2f", version=2)


@pytest.mark.slow
def test_report_opens_in_a_real_browser_with_every_section(
    tiny_trained_workdir, tiny_corpus, tmp_path, browser
):
    """report.html in headless Chromium: every section is there, every plot decodes, no raw JSON."""
    from s2f_tf import report as report_module

    out = str(tmp_path / "eval")
    r = run_s2f(
        "evaluate",
        f"--workdir={tiny_trained_workdir}",
        f"--data={tiny_corpus}",
        f"--eval_dir={out}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    browser.get("file://" + os.path.join(out, "report.html"))
    for anchor, title in report_module.SECTIONS:
        section = browser.find_element("id", anchor)
        assert section.is_displayed() and title in section.text, anchor
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.className, i.complete ? i.naturalWidth : 0]);"
    )
    assert all(width > 0 for _, _, width in images), images
    plots = [alt for alt, cls, _ in images if cls == "plot"]
    for expected in (
        "recall at K against chance",
        "1:2 matching accuracy",
        "feature angle histograms",
        "sex confusion matrices",
        "ancestry confusion matrices",
        "age confusion matrices",
        "craniofacial correlations",
        "figures by sex",
        "figures by age_band",
    ):
        assert expected in plots, (expected, plots)
    assert any(cls == "faces" for _, cls, _ in images)
    text = browser.find_element("tag name", "body").text
    assert '{"' not in text and '":' not in text, "raw JSON on the page"
    assert "Intended use" in text and "Ethical considerations" in text
    browser.save_screenshot(str(tmp_path / "report.png"))


@pytest.mark.slow
def test_a_stage_trained_in_mixed_bfloat16_leaves_evaluate_and_export_in_float32(
    tiny_trained_workdir, tiny_corpus, tmp_path
):
    """`s2f demo` trains, evaluates and exports in one process: a stage's mixed_bfloat16 policy must
    not leak into the models evaluate and export build (it did on a CPU with AMX: the attribute
    judge's bfloat16 logits met float32 targets)."""
    import dataclasses
    import shutil

    import keras

    from s2f_tf.configs import get_config
    from s2f_tf.evaluate import evaluate
    from s2f_tf.train.loop import TrainOptions, train

    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_trained_workdir, workdir)
    shutil.rmtree(os.path.join(workdir, "voice_encoder"))
    config = get_config("tiny")
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train,
            precision="float32",
            voice_encoder_precision="mixed_bfloat16",
            voice_encoder_steps=2,
            validate_every=0,
        ),
    )
    trained = train(
        config,
        TrainOptions(
            stage="voice_encoder",
            workdir=workdir,
            data_dir=tiny_corpus,
            jit_compile=False,
            progress=False,
        ),
        log=lambda *a: None,
    )
    assert trained["precision"] == "mixed_bfloat16"  # the stage's own setting
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the stage
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # and even if a caller sets it
    result = evaluate(workdir, tiny_corpus, out_dir=str(tmp_path / "eval"), log=lambda *a: None)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    keras.mixed_precision.set_global_policy("float32")
    again = evaluate(workdir, tiny_corpus, out_dir=str(tmp_path / "eval2"), log=lambda *a: None)
    # the same figures: evaluation is float32 whatever the caller's policy, and reads the clips in
    # a fixed order (its galleries and the judge's faces do not change between runs)
    for figures in (
        lambda m: m["inputs"]["1s"]["retrieval"],
        lambda m: m["inputs"]["1s"]["matching"],
        lambda m: m["face_to_face"]["image_retrieval"],
        lambda m: m["inputs"]["1s"]["similarity"],
    ):
        assert figures(result) == figures(again)
    from s2f_tf.workdir import load_trained_model

    model, _ = load_trained_model(workdir)  # what export_workdir builds
    assert {layer.compute_dtype for layer in model._flatten_layers()} == {"float32"}
