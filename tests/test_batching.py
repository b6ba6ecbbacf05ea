"""Serving as production runs it: TF Serving's batching in the development server (serving/batching.py)
with the shipped serving/batching.config, the model info every client reads from the model's metadata
(clip_samples, min_samples), warm-up of every allowed batch size, and the Prometheus metrics.

Servers bind 127.0.0.1 on free ports and are always stopped. The tiny export is conftest's.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from s2f_tf import contract
from s2f_tf.export import WARMUP_BATCH_SIZES
from serving.batching import (
    QUEUE_FULL,
    SHIPPED,
    Batcher,
    BatchingParameters,
    parse_batching_parameters,
    read_batching_parameters,
)
from serving.client import GrpcClient, RestClient, ServingError
from serving.server import AUTO_PORT, UNLOAD_GRACE_SECONDS, DevServer
from serving.validation import RequestError

MODEL = "s2f"
CLIP = 16000  # tiny: 1 s clips, at least 4000 samples
MIXED = (4000, 9000, 16000, 24000, 6000, 16000, 12000, 30000)  # samples per request


def _wave(samples: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).randn(batch, samples) * 0.05).astype(np.float32)


def _merging() -> BatchingParameters:
    """The shipped batching.config with a 300 ms batch timeout, so concurrent requests surely merge."""
    return dataclasses.replace(read_batching_parameters(SHIPPED), batch_timeout_micros=300_000)


@pytest.fixture(scope="module")
def model_dir(untrained_tiny_export):
    return os.path.dirname(untrained_tiny_export["version_dir"])


@pytest.fixture(scope="module")
def server(model_dir):
    with DevServer(
        model_dir, MODEL, port=AUTO_PORT, rest_api_port=AUTO_PORT, batching=_merging()
    ) as srv:
        yield srv


# -- the parameters file
def test_shipped_config_parses_as_tf_serving_reads_it():
    params = read_batching_parameters(SHIPPED)
    assert params.max_batch_size == 32 and params.batch_timeout_micros == 2000
    assert params.max_enqueued_batches == 100 and params.num_batch_threads == 4
    assert params.allowed_batch_sizes == WARMUP_BATCH_SIZES  # what the export warms up
    assert not params.pad_variable_length_inputs
    assert [params.padded_size(n) for n in (1, 3, 5, 17, 32)] == [1, 4, 8, 32, 32]
    with pytest.raises(ValueError, match=r"2:1.*max_batch_sizes"):
        parse_batching_parameters("max_batch_size { value: 8 }\nmax_batch_sizes { value: 8 }")
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(ValueError, match="never pads"):
        parse_batching_parameters("pad_variable_length_inputs: true")


# -- the batcher itself
def test_batcher_merges_pads_to_an_allowed_size_and_splits():
    ran = []

    def run(array):
        ran.append(array.shape)
        return {"twice": array * 2}

    params = BatchingParameters(
        max_batch_size=8, batch_timeout_micros=300_000, allowed_batch_sizes=(1, 4, 8)
    )
    batcher = Batcher(params, run, "serving_default_waveform:0")
    rows = [np.full((1, 5), i, np.float32) for i in range(3)]
    got = [None] * 3
    threads = [
        threading.Thread(target=lambda i=i: got.__setitem__(i, batcher.submit(rows[i])))
        for i in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    assert ran == [(4, 5)]  # one run, 3 rows padded to 4
    for i in range(3):
        np.testing.assert_array_equal(got[i]["twice"], rows[i] * 2)


def test_full_queue_answers_unavailable():
    release = threading.Event()

    def run(array):
        release.wait(30)
        return {"x": array}

    params = BatchingParameters(
        max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1, allowed_batch_sizes=(1,)
    )
    batcher = Batcher(params, run, "t:0")
    first = threading.Thread(target=batcher.submit, args=(np.zeros((1, 2), np.float32),))
    first.start()
    while batcher._batches:  # the first batch is taken by the one thread, which blocks
        threading.Event().wait(0.01)
    second = threading.Thread(target=batcher.submit, args=(np.zeros((1, 2), np.float32),))
    second.start()
    while not batcher._batches:
        threading.Event().wait(0.01)
    with pytest.raises(RequestError) as info:
        batcher.submit(np.zeros((1, 2), np.float32))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.message == QUEUE_FULL
    release.set()
    first.join(30)
    second.join(30)
    batcher.close()


def test_a_request_past_its_deadline_is_answered_and_left_out_of_its_batch():
    import time

    release, ran = threading.Event(), []

    def run(array):
        ran.append(array[:, 0].tolist())
        release.wait(30)
        return {"x": array}

    params = BatchingParameters(max_batch_size=1, num_batch_threads=1, allowed_batch_sizes=(1,))
    batcher = Batcher(params, run, "t:0")
    busy = threading.Thread(target=batcher.submit, args=(np.zeros((1, 2), np.float32),))
    busy.start()
    while not ran:  # the one thread is busy with the first request: the next ones wait
        threading.Event().wait(0.01)
    got = {}
    late = threading.Thread(
        target=lambda: got.setdefault("late", batcher.submit(np.ones((1, 2), np.float32)))
    )
    late.start()
    started = time.monotonic()
    with pytest.raises(RequestError) as info:
        batcher.submit(np.full((1, 2), 2, np.float32), deadline=started + 0.2)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.2 <= time.monotonic() - started < 5  # answered at its deadline, not when run
    release.set()
    for thread in (busy, late):
        thread.join(30)
    batcher.close()
    assert ran == [[0.0], [1.0]]  # the expired request never ran
    np.testing.assert_array_equal(got["late"]["x"], np.ones((1, 2)))


# -- the export and the server
def test_warmup_covers_every_allowed_size_for_both_signatures(untrained_tiny_export):
    path = os.path.join(
        untrained_tiny_export["version_dir"], contract.ASSETS_EXTRA, contract.WARMUP_FILE
    )
    seen = set()
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        (proto,) = request.inputs.values()
        seen.add((request.model_spec.signature_name, proto.tensor_shape.dim[0].size))
    allowed = read_batching_parameters(SHIPPED).allowed_batch_sizes
    want = {(s, b) for s in (contract.SIGNATURE, contract.DECODE_SIGNATURE) for b in allowed}
    assert seen == want


def test_metadata_says_clip_and_minimum_over_grpc_and_rest(server, untrained_tiny_export):
    on_disk = contract.read_model_info(untrained_tiny_export["version_dir"])
    want = {k: on_disk[k] for k in contract.INFO_FIELDS}
    with GrpcClient(server.grpc_target, MODEL) as client:
        assert client.model_info() == want
    assert RestClient(server.rest_url, MODEL).model_info() == want
    assert want["clip_samples"] == CLIP


def test_mixed_length_merge_gets_tf_servings_error(server):
    """Two raw requests of different lengths, sent together, merge into one batch: TF Serving's
    FAILED_PRECONDITION for both."""
    channel = grpc.insecure_channel(server.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    codes, details = [], []

    def send(samples):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=MODEL))
        request.inputs["waveform"].CopyFrom(tf.make_tensor_proto(_wave(samples)))
        try:
            stub.Predict(request, timeout=30)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
            details.append(e.details())

    threads = [threading.Thread(target=send, args=(n,)) for n in (CLIP, CLIP // 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    channel.close()
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION] * 2, codes
    assert details[0] == (
        "Tensors with name 'serving_default_waveform:0' from different tasks have different shapes "
        "and padding is turned off. Set pad_variable_length_inputs to true, or ensure that all "
        "tensors with the same name have equal dimensions starting with the first dim."
    )


def test_concurrent_mixed_lengths_from_the_python_clients(server):
    """The clients fit every waveform to the export's clip (tiled, as training tiles: the same
    features as the short clip alone) and all merge; clients sending as given (what they did before)
    get TF Serving's error."""
    waves = [_wave(n, seed=i) for i, n in enumerate(MIXED)]
    before = _metric(server, "processed_batch_size_count")
    with GrpcClient(server.grpc_target, MODEL, max_concurrency=8) as client:
        got = client.predict_many(waves)
    with GrpcClient(server.grpc_target, MODEL, max_concurrency=8, fit=False) as raw:
        with pytest.raises(ServingError) as info:
            raw.predict_many(waves)
    assert info.value.code == "FAILED_PRECONDITION"
    assert _metric(server, "processed_batch_size_count") < before + len(MIXED)  # merged
    from s2f_tf.predict import LocalModel

    local = LocalModel(server.model_base_path)
    for wave, out in zip(waves, got):
        want = local.predict(contract.center_crop(wave, CLIP))  # tiled in the graph when shorter
        np.testing.assert_allclose(out["face_feature"], want["face_feature"], atol=1e-4)
    rest = RestClient(server.rest_url, MODEL)
    rows = [None] * 4
    threads = [
        threading.Thread(target=lambda i=i: rows.__setitem__(i, rest.predict(waves[i])))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r["face_feature"].shape == (1, 32) for r in rows)
    with pytest.raises(ServingError, match="clip too short"):
        RestClient(server.rest_url, MODEL).predict(_wave(100))  # refused before sending


def _metric(server, suffix: str, **labels) -> float:
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics") as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if line.startswith("#") or not name.endswith(suffix):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_what_was_served(server):
    ok = _metric(server, ":tensorflow:serving:request_count", model_name=MODEL, status="OK")
    bad = _metric(server, ":tensorflow:serving:request_count", status="INVALID_ARGUMENT")
    with GrpcClient(server.grpc_target, MODEL, fit=False) as client:
        client.predict(_wave(CLIP))
        client.predict(_wave(CLIP, batch=3))
        with pytest.raises(ServingError):
            client.predict(_wave(10))
    RestClient(server.rest_url, MODEL).predict(_wave(CLIP))
    assert _metric(server, ":tensorflow:serving:request_count", status="OK") == ok + 3
    assert (
        _metric(server, ":tensorflow:serving:request_count", status="INVALID_ARGUMENT") == bad + 1
    )
    assert _metric(server, "request_latency_count", API="predict", entrypoint="REST") >= 1
    # the batch of 3 ran padded to 4
    assert _metric(server, "processed_batch_size_bucket", le="4.0") > _metric(
        server, "processed_batch_size_bucket", le="2.0"
    )


@pytest.mark.slow
def test_cli_predict_through_a_batching_server_under_traffic(server, tmp_path):
    """`s2f predict --server` on a recording whose second stretch of speech is shorter than a clip,
    while a Python client keeps the batching server busy with clip-length requests: its windows are
    all clip-length (the short one tiled), so they merge with the traffic and the faces come back."""
    import json

    import soundfile
    from conftest import run_s2f
    from test_page import _voice

    silence = np.zeros(16000)
    audio = np.concatenate([_voice(1.6, seed=3), silence, _voice(0.6, seed=3), silence])
    wav = str(tmp_path / "two_stretches.wav")
    soundfile.write(wav, audio, 16000, subtype="PCM_16")
    stop = threading.Event()
    answered = []

    def traffic():
        with GrpcClient(server.grpc_target, MODEL) as client:
            while not stop.is_set():
                answered.append(client.predict(_wave(CLIP)))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        r = run_s2f(
            "predict",
            wav,
            f"--server={server.grpc_target}",
            "--speakers=1",
            f"--face_out={tmp_path / 'face.png'}",
        )
    finally:
        stop.set()
        thread.join(60)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(report["speech"]) == 2, report  # the short stretch is one of them
    assert min(b - a for a, b in report["speech"]) < CLIP / 16000
    assert report["speakers"][0]["window_seconds"] == pytest.approx(1.0, abs=0.01)
    assert answered and os.path.exists(tmp_path / "face.png")


def test_client_tiling_is_training_and_the_front_ends():
    """contract.tile (clients, speech.windows) repeats a short clip from its start, as the model's
    front end does in the graph (frontend.tile_to_length) and training does on the bytes."""
    from s2f_tf.frontend import tile_to_length
    from s2f_tf.media.speech import windows

    x = np.arange(1, 8, dtype=np.float32)[None]  # [1, 7]
    want = tile_to_length(tf.constant(x), 16).numpy()
    np.testing.assert_array_equal(contract.tile(x, 16), want)
    np.testing.assert_array_equal(contract.fit_clip(x, 16), want)
    np.testing.assert_array_equal(contract.fit_clip(np.arange(10)[None], 4), [[3, 4, 5, 6]])
    got = windows(np.arange(20), [(0, 8), (10, 13)], 8)
    np.testing.assert_array_equal(got, [list(range(8)), [10, 11, 12, 10, 11, 12, 10, 11]])
    assert windows(np.arange(20), [], 8).shape == (0, 8)


def test_recording_windows_all_have_the_clip_length():
    """`s2f predict`'s path (recording.analyse): a stretch of speech shorter than a clip is tiled
    to one, so every request carries windows of exactly clip_samples."""
    from test_page import _voice

    from s2f_tf import recording

    shapes = []

    class Features:
        def predict(self, batch):
            shapes.append(np.asarray(batch).shape)
            return {"face_feature": np.ones((len(batch), 3), np.float32)}

    silence = np.zeros(16000)
    audio = np.concatenate([_voice(2.5, seed=3), silence, _voice(0.5, seed=3), silence])
    pcm = contract.float_to_pcm(audio)
    info = {"sample_rate": 16000, "clip_samples": CLIP, "min_samples": 4000, "max_samples": 160000}
    found = recording.analyse(pcm, Features(), info, speakers=1)
    lengths = [b - a for a, b in found.speakers[0].windows]
    assert min(lengths) < CLIP  # the short stretch ...
    assert shapes and all(s[1] == CLIP for s in shapes)  # ... went out as a whole clip


@pytest.mark.slow
def test_rolling_out_new_versions_under_load_loses_no_request(untrained_tiny_export, tmp_path):
    """Clients keep sending while versions 2 and 3 are dropped in (latest-2 unloads 1) on a batching
    server: every request is answered, by each version in turn."""
    import shutil
    import time

    model_dir = str(tmp_path / MODEL)
    os.makedirs(model_dir)

    def drop(version):
        tmp = os.path.join(model_dir, f".tmp-{version}")
        shutil.copytree(untrained_tiny_export["version_dir"], tmp)
        os.rename(tmp, os.path.join(model_dir, str(version)))

    drop(1)
    errors, versions = [], []
    stop = threading.Event()
    with DevServer(
        model_dir, MODEL, port=AUTO_PORT, rest_api_port=0, poll_seconds=0.2, batching=_merging()
    ) as srv:

        def traffic(seed):
            with GrpcClient(srv.grpc_target, MODEL) as client:
                while not stop.is_set():
                    try:
                        response = client.predict_response(_wave(CLIP, seed=seed))
                        versions.append(response.model_spec.version.value)
                    except ServingError as e:
                        errors.append(e)

        threads = [threading.Thread(target=traffic, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        for version in (2, 3):
            drop(version)
            deadline = time.monotonic() + 60
            while srv.versions()[0] != version or versions[-1:] != [version]:
                assert time.monotonic() < deadline, srv.versions()
                time.sleep(0.1)
        time.sleep(UNLOAD_GRACE_SECONDS + 1)  # version 1's batchers close meanwhile
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    assert {1, 2, 3} <= set(versions)
