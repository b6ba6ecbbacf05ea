"""Serving: the development server (serving/server.py) against the official tensorflow-serving-api
stubs and TF Serving's REST API, the clients (serving/client.py) and bench_serve.

One tiny model is exported per module; servers bind 127.0.0.1 on free ports and are always stopped.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import free_port
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from s2f_tf import contract
from serving import client as client_lib
from serving.batching import SHIPPED, read_batching_parameters
from serving.client import GrpcClient, RestClient, ServingError
from serving.server import AUTO_PORT, DevServer, serve

MODEL = "s2f"
CLIP = 16000  # tiny: 1 s at 16 kHz; min 4000, max 160000 samples
LIMIT = 2 << 20  # max_message_bytes of the module server (a 4 x 10 s request exceeds it)
STATE = get_model_status_pb2.ModelVersionStatus.State


def _wave(batch: int = 1, samples: int = CLIP, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).randn(batch, samples) * 0.05).astype(np.float32)  # [B, N]


def _copy_version(src: str, model_dir: str, version: int) -> str:
    """Drops a version in atomically, like s2f export: copy to .tmp-*, then rename."""
    tmp = os.path.join(model_dir, f".tmp-{version}-copy")
    shutil.copytree(src, tmp)
    final = os.path.join(model_dir, str(version))
    os.rename(tmp, final)
    return final


@pytest.fixture(scope="module")
def exported(untrained_tiny_export):
    """A tiny untrained model exported once (conftest's, shared with the page tests): {"model",
    "config", "version_dir"}. Its version is only copied from, never written into."""
    assert untrained_tiny_export["config"].audio.clip_samples == CLIP
    return untrained_tiny_export


@pytest.fixture(scope="module")
def model_dir(exported, tmp_path_factory):
    """<base>/s2f with versions 1 and 2 (same weights)."""
    path = str(tmp_path_factory.mktemp("models") / MODEL)
    os.makedirs(path)
    _copy_version(exported["version_dir"], path, 1)
    _copy_version(exported["version_dir"], path, 2)
    return path


@pytest.fixture(scope="module")
def server(model_dir):
    srv = DevServer(
        model_dir,
        MODEL,
        port=AUTO_PORT,
        rest_api_port=AUTO_PORT,
        poll_seconds=0.5,
        max_message_bytes=LIMIT,
        batching=read_batching_parameters(SHIPPED),  # production's batching (serving/Dockerfile)
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(server.grpc_target)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _request(
    array,
    name: str = MODEL,
    version: int | None = None,
    input_name: str = "waveform",
    signature: str = "serving_default",
) -> predict_pb2.PredictRequest:
    """A PredictRequest the way TF Serving's own examples build one (tf.make_tensor_proto)."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=name, signature_name=signature)
    )
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(array))
    return request


def _rest(url: str, body=None, raw: bytes | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- happy paths ------------------------------------------------------------------------------------


def test_client_contract_matches_export():
    assert (client_lib.SIGNATURE, client_lib.INPUT, client_lib.OUTPUTS) == (
        contract.SIGNATURE,
        contract.INPUT,
        contract.OUTPUTS,
    )


def test_server_outputs_match_in_process(exported, server):
    wave = _wave(3, seed=1)
    loaded = tf.saved_model.load(os.path.join(server.model_base_path, "2"))
    want = {
        k: v.numpy()
        for k, v in loaded.signatures["serving_default"](waveform=tf.constant(wave)).items()
    }
    keras_out = exported["model"](wave, training=False)
    with GrpcClient(server.grpc_target, MODEL) as client:
        got_grpc = client.predict(wave)
    got_rest = RestClient(server.rest_url, MODEL).predict(wave)
    for got in (got_grpc, got_rest):
        assert set(got) == {"face_feature", "face_image", "landmarks"}
        for k in got:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got["face_feature"], want["face_feature"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got["landmarks"], want["landmarks"], rtol=1e-6, atol=1e-6)
        assert np.abs(got["face_image"].astype(int) - want["face_image"].astype(int)).max() <= 1
        np.testing.assert_allclose(
            got["face_feature"], keras_out["face_feature"].numpy(), atol=1e-4, rtol=1e-4
        )
        np.testing.assert_allclose(
            got["landmarks"], keras_out["landmarks"].numpy(), atol=1e-4, rtol=1e-4
        )


def test_official_grpc_stubs_round_trip(server, predict_stub, model_stub):
    response = predict_stub.Predict(_request(_wave(2)), timeout=30)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    out = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert out["face_feature"].shape == (2, 32) and out["face_feature"].dtype == np.float32
    assert out["face_image"].shape == (2, 32, 32, 3) and out["face_image"].dtype == np.uint8
    assert out["landmarks"].shape == (2, 68, 2) and out["landmarks"].dtype == np.float32

    filtered = predict_stub.Predict(_request(_wave(1)), timeout=30)
    request = _request(_wave(1))
    request.output_filter.append("landmarks")
    filtered = predict_stub.Predict(request, timeout=30)
    assert list(filtered.outputs) == ["landmarks"]

    meta = predict_stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_pb2.ModelSpec(name=MODEL), metadata_field=["signature_def"]
        ),
        timeout=30,
    )
    assert meta.model_spec.version.value == 2
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigmap)
    sig = sigmap.signature_def["serving_default"]
    assert list(sig.inputs) == ["waveform"] and sig.inputs["waveform"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sig.inputs["waveform"].tensor_shape.dim] == [-1, -1]
    assert set(sig.outputs) == {"face_feature", "face_image", "landmarks"}
    assert sig.outputs["face_image"].dtype == types_pb2.DT_UINT8

    status = model_stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL)),
        timeout=30,
    )
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (2, STATE.AVAILABLE, 0),
        (1, STATE.AVAILABLE, 0),
    ]
    one = model_stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=MODEL, version={"value": 1})
        ),
        timeout=30,
    )
    assert [s.version for s in one.model_version_status] == [1]


def test_explicit_version_is_honoured(server, predict_stub):
    assert (
        predict_stub.Predict(_request(_wave(), version=1), timeout=30).model_spec.version.value == 1
    )
    assert predict_stub.Predict(_request(_wave()), timeout=30).model_spec.version.value == 2
    with GrpcClient(server.grpc_target, MODEL, version=1) as client:
        assert client.predict_response(_wave()).model_spec.version.value == 1
        assert client.metadata()["model_spec"]["version"] == "1"


def test_decode_feature_signature_over_grpc_and_rest(server, predict_stub, exported):
    """The export's second signature: a face feature in, the face decoder's image and landmarks out,
    equal to serving_default's for the same feature; bad features are refused with the contract's words."""
    wave = _wave(2)
    full = predict_stub.Predict(_request(wave), timeout=30)
    feature = tf.make_ndarray(full.outputs["face_feature"])  # [2, D]
    response = predict_stub.Predict(
        _request(feature, input_name="face_feature", signature="decode_feature"), timeout=30
    )
    assert response.model_spec.signature_name == "decode_feature"
    assert sorted(response.outputs) == ["face_image", "landmarks"]
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["landmarks"]),
        tf.make_ndarray(full.outputs["landmarks"]),
        atol=1e-5,
    )
    image = tf.make_ndarray(response.outputs["face_image"])
    assert (
        image.dtype == np.uint8
        and np.abs(image.astype(int) - tf.make_ndarray(full.outputs["face_image"])).max() <= 1
    )
    with GrpcClient(server.grpc_target, MODEL) as client:
        np.testing.assert_array_equal(client.decode(feature)["face_image"], image)
    dim = feature.shape[1]
    for bad, fragment in (
        (np.zeros((1, dim + 1), np.float32), "wrong feature size"),
        (np.zeros((1, 2, dim), np.float32), "wrong rank"),
        (np.full((1, dim), np.nan, np.float32), "non-finite"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            predict_stub.Predict(
                _request(bad, input_name="face_feature", signature="decode_feature"), timeout=30
            )
        assert (
            info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and fragment in info.value.details()
        )
        assert f"float32 [batch, {dim}]" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:  # the waveform's name: refused
        predict_stub.Predict(_request(feature, signature="decode_feature"), timeout=30)
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "'face_feature'" in info.value.details()
    )
    base = f"{server.rest_url}/v1/models/{MODEL}"
    code, cols = _rest(
        f"{base}:predict", {"signature_name": "decode_feature", "inputs": feature.tolist()}
    )
    assert code == 200 and sorted(cols["outputs"]) == ["face_image", "landmarks"]
    assert np.array_equal(np.asarray(cols["outputs"]["face_image"], np.uint8), image)
    code, payload = _rest(f"{base}:predict", {"signature_name": "nope", "inputs": feature.tolist()})
    assert code == 400 and "decode_feature, serving_default" in payload["error"]


def test_rest_round_trips_both_formats(server):
    wave = _wave(2, seed=3)
    with GrpcClient(server.grpc_target, MODEL) as client:
        want = client.predict(wave)
    base = f"{server.rest_url}/v1/models/{MODEL}"

    code, rows = _rest(f"{base}:predict", {"instances": wave.tolist()})
    assert code == 200 and len(rows["predictions"]) == 2
    assert set(rows["predictions"][0]) == {"face_feature", "face_image", "landmarks"}
    np.testing.assert_allclose(
        np.array([r["face_feature"] for r in rows["predictions"]]),
        want["face_feature"],
        rtol=1e-6,
        atol=1e-6,
    )

    code, rows_named = _rest(
        f"{base}:predict", {"instances": [{"waveform": w} for w in wave.tolist()]}
    )
    assert code == 200 and rows_named == rows

    code, cols = _rest(
        f"{base}/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"waveform": wave.tolist()}},
    )
    assert code == 200
    np.testing.assert_array_equal(
        np.array(cols["outputs"]["face_image"], np.uint8), want["face_image"]
    )
    np.testing.assert_allclose(
        np.array(cols["outputs"]["landmarks"]), want["landmarks"], rtol=1e-6, atol=1e-6
    )
    code, cols_bare = _rest(f"{base}:predict", {"inputs": wave.tolist()})
    assert code == 200 and cols_bare == cols

    code, status = _rest(base)
    assert code == 200 and status == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    code, status1 = _rest(f"{base}/versions/1")
    assert code == 200 and [s["version"] for s in status1["model_version_status"]] == ["1"]

    code, meta = _rest(f"{base}/metadata")
    assert code == 200 and meta["model_spec"] == {
        "name": MODEL,
        "signature_name": "",
        "version": "2",
    }
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["waveform"]["dtype"] == "DT_FLOAT"
    assert sig["method_name"] == "tensorflow/serving/predict"
    rest_client = RestClient(server.rest_url, MODEL)
    with GrpcClient(server.grpc_target, MODEL) as client:
        assert rest_client.metadata() == client.metadata() == meta
        assert rest_client.status() == client.status() == status


def test_batch_of_16_over_grpc(server):
    wave = _wave(16, seed=4)
    with GrpcClient(server.grpc_target, MODEL) as client:
        out = client.predict(wave)
        singles = client.predict_many([wave[i : i + 1] for i in range(4)])
    assert out["face_feature"].shape == (16, 32) and out["face_image"].shape == (16, 32, 32, 3)
    for i, single in enumerate(singles):
        np.testing.assert_allclose(
            single["face_feature"][0], out["face_feature"][i], rtol=1e-5, atol=1e-5
        )


def test_short_and_long_clips_within_limits(server):
    with GrpcClient(server.grpc_target, MODEL, fit=False) as client:
        for samples in (4000, 48000):
            assert client.predict(_wave(1, samples))["face_feature"].shape == (1, 32)


# -- bad requests -----------------------------------------------------------------------------------


def _no_values() -> predict_pb2.PredictRequest:
    request = _request(_wave())
    request.inputs["waveform"].ClearField("tensor_content")
    return request


BAD_GRPC = {
    "wrong dtype": (
        lambda: _request(np.zeros((2, 100), np.int32)),
        "INVALID_ARGUMENT",
        "wrong dtype",
    ),
    "float64": (
        lambda: _request(_wave().astype(np.float64)),
        "INVALID_ARGUMENT",
        "got float64 [1, 16000]",
    ),
    "rank 1": (lambda: _request(_wave()[0]), "INVALID_ARGUMENT", "wrong rank"),
    "rank 3": (lambda: _request(_wave()[None]), "INVALID_ARGUMENT", "wrong rank"),
    "scalar": (lambda: _request(np.float32(1.0)), "INVALID_ARGUMENT", "wrong rank"),
    "too short": (lambda: _request(_wave(1, 3999)), "INVALID_ARGUMENT", "clip too short"),
    "too long": (lambda: _request(_wave(1, 160001)), "INVALID_ARGUMENT", "clip too long"),
    "nan": (
        lambda: _request(np.where(np.arange(CLIP) == 7, np.nan, _wave()).astype(np.float32)),
        "INVALID_ARGUMENT",
        "NaN",
    ),
    "inf": (
        lambda: _request(np.where(np.arange(CLIP) == 7, -np.inf, _wave()).astype(np.float32)),
        "INVALID_ARGUMENT",
        "Inf",
    ),
    "empty batch": (
        lambda: _request(np.zeros((0, CLIP), np.float32)),
        "INVALID_ARGUMENT",
        "empty input",
    ),
    "empty clip": (
        lambda: _request(np.zeros((2, 0), np.float32)),
        "INVALID_ARGUMENT",
        "empty input",
    ),
    "batch too large": (lambda: _request(_wave(33, 4000)), "INVALID_ARGUMENT", "batch too large"),
    "values missing": (_no_values, "INVALID_ARGUMENT", "malformed tensor"),
    "wrong input name": (
        lambda: _request(_wave(), input_name="audio"),
        "INVALID_ARGUMENT",
        "'audio'",
    ),
    "wrong signature": (
        lambda: _request(_wave(), signature="classify"),
        "FAILED_PRECONDITION",
        "classify",
    ),
    "unknown model": (lambda: _request(_wave(), name="nope"), "NOT_FOUND", "nope"),
    "unknown version": (lambda: _request(_wave(), version=7), "NOT_FOUND", "7"),
    "oversized": (lambda: _request(_wave(4, 160000)), "RESOURCE_EXHAUSTED", "larger than max"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRPC))
def test_bad_grpc_requests_get_the_right_code(server, predict_stub, case):
    make, code, fragment = BAD_GRPC[case]
    with pytest.raises(grpc.RpcError) as info:
        predict_stub.Predict(make(), timeout=30)
    assert info.value.code().name == code, info.value.details()
    assert fragment in info.value.details()


def test_invalid_argument_message_says_what_was_expected(predict_stub):
    with pytest.raises(grpc.RpcError) as info:
        predict_stub.Predict(_request(np.zeros((2, 100), np.int32)), timeout=30)
    assert info.value.details() == (
        "wrong dtype: input 'waveform' must be float32 [batch, samples] with 4000..160000 samples at "
        "16000 Hz, batch 1..32; got int32 [2, 100]"
    )


def test_bad_metadata_and_status_requests(predict_stub, model_stub):
    cases = [
        (
            predict_stub.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_pb2.ModelSpec(name=MODEL)
            ),
            "INVALID_ARGUMENT",
        ),
        (
            predict_stub.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_pb2.ModelSpec(name=MODEL), metadata_field=["graph"]
            ),
            "INVALID_ARGUMENT",
        ),
        (
            predict_stub.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_pb2.ModelSpec(name="nope"), metadata_field=["signature_def"]
            ),
            "NOT_FOUND",
        ),
        (
            model_stub.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="nope")),
            "NOT_FOUND",
        ),
        (
            model_stub.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest(
                model_spec=model_pb2.ModelSpec(name=MODEL, version={"value": 7})
            ),
            "NOT_FOUND",
        ),
    ]
    for method, request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=30)
        assert info.value.code().name == code


def test_bad_rest_requests_get_the_right_status(server):
    base = f"{server.rest_url}/v1/models/{MODEL}"
    wave = _wave().tolist()
    cases = {
        "strings": (f"{base}:predict", {"instances": [["a", "b"]]}, 400, "wrong dtype"),
        "rank": (f"{base}:predict", {"instances": wave[0]}, 400, "wrong rank"),
        "too short": (f"{base}:predict", {"inputs": [[0.0] * 100]}, 400, "clip too short"),
        "too long": (f"{base}:predict", {"inputs": [[0.0] * 160001]}, 400, "clip too long"),
        "empty": (f"{base}:predict", {"inputs": [[]]}, 400, "empty input"),
        "ragged": (f"{base}:predict", {"instances": [[0.0] * 4000, [0.0] * 4001]}, 400, "ragged"),
        "wrong input name": (f"{base}:predict", {"inputs": {"audio": wave}}, 400, "'audio'"),
        "both formats": (
            f"{base}:predict",
            {"inputs": wave, "instances": wave},
            400,
            "exactly one",
        ),
        "neither format": (
            f"{base}:predict",
            {"signature_name": "serving_default"},
            400,
            "exactly one",
        ),
        "wrong signature": (f"{base}:predict", {"signature_name": "x", "inputs": wave}, 400, '"x"'),
        "unknown model": (
            f"{server.rest_url}/v1/models/nope:predict",
            {"inputs": wave},
            404,
            "nope",
        ),
        "unknown version": (f"{base}/versions/7:predict", {"inputs": wave}, 404, "7"),
        "unknown version status": (f"{base}/versions/7", None, 404, "version 7"),
        "unknown model metadata": (f"{server.rest_url}/v1/models/nope/metadata", None, 404, "nope"),
        "unknown path": (f"{server.rest_url}/v2/whatever", None, 404, "Malformed request"),
        "classify": (f"{base}:classify", {"examples": []}, 501, "predict"),
    }
    for name, (url, body, status, fragment) in cases.items():
        code, payload = _rest(url, body)
        assert (code, list(payload)) == (status, ["error"]), (name, payload)
        assert fragment in payload["error"], (name, payload)
    for token in ("NaN", "Infinity", "-Infinity"):
        raw = ('{"inputs": [[' + ", ".join(["0.0"] * 4000 + [token]) + "]]}").encode()
        code, payload = _rest(f"{base}:predict", raw=raw)
        assert code == 400 and "non-finite" in payload["error"], (token, payload)
    code, payload = _rest(f"{base}:predict", raw=b"{not json")
    assert code == 400 and "JSON" in payload["error"]
    code, payload = _rest(f"{base}:predict", raw=b" " * (LIMIT + 1))
    assert code == 413 and "larger than" in payload["error"] and str(LIMIT) in payload["error"]
    request = urllib.request.Request(base, data=b"{}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 404 and "Malformed request" in json.loads(info.value.read())["error"]


def test_rest_refuses_oversized_body_before_it_is_sent(server):
    """curl sends `Expect: 100-continue` for large bodies: the 413 comes before the body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.rest_api_port, timeout=30)
    try:
        conn.putrequest("POST", f"/v1/models/{MODEL}:predict")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(LIMIT * 10))
        conn.putheader("Expect", "100-continue")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and "larger than" in json.loads(response.read())["error"]
    finally:
        conn.close()


def test_clients_raise_serving_error_with_server_message(server):
    with GrpcClient(server.grpc_target, MODEL, fit=False) as client:
        with pytest.raises(ServingError) as info:
            client.predict(np.zeros((1, 100), np.float32))
        assert info.value.code == "INVALID_ARGUMENT" and "clip too short" in info.value.message
        assert client.retries_made == 0  # never retried
        with pytest.raises(ServingError) as info:
            client.predict(_wave(4, 160000))
        assert info.value.code == "RESOURCE_EXHAUSTED" and client.retries_made == 0
    with GrpcClient(server.grpc_target, "nope") as client:
        with pytest.raises(ServingError) as info:
            client.predict(_wave())
        assert info.value.code == "NOT_FOUND" and client.retries_made == 0
    rest = RestClient(server.rest_url, MODEL, fit=False)
    with pytest.raises(ServingError) as info:
        rest.predict(np.zeros((1, 100), np.float32))
    assert (info.value.code, info.value.http_status) == ("INVALID_ARGUMENT", 400)
    assert "clip too short" in info.value.message and rest.retries_made == 0
    with pytest.raises(ServingError) as info:
        RestClient(server.rest_url, MODEL, version=9).predict(_wave())
    assert (info.value.code, info.value.http_status) == ("NOT_FOUND", 404)


def test_burst_of_malformed_requests_leaves_server_healthy(server, predict_stub):
    makers = [m for m, _, _ in BAD_GRPC.values()]
    requests = [makers[i % len(makers)]() for i in range(150)]
    deadline = time.monotonic() + 60
    pending = [predict_stub.Predict.future(r, timeout=30) for r in requests]
    codes = set()
    for f in pending:
        with pytest.raises(grpc.RpcError) as info:
            f.result(timeout=max(0.1, deadline - time.monotonic()))
        codes.add(info.value.code())
    assert grpc.StatusCode.OK not in codes and grpc.StatusCode.INTERNAL not in codes
    base = f"{server.rest_url}/v1/models/{MODEL}"
    bodies = [
        {"instances": [[0.0] * 10]},
        {"inputs": [["x"]]},
        b"[1, 2",
        {"inputs": {"a": [[1.0]]}},
        b"\xff\xfe",
    ]
    for i in range(50):
        body = bodies[i % len(bodies)]
        code, _ = _rest(
            f"{base}:predict",
            raw=body if isinstance(body, bytes) else None,
            body=None if isinstance(body, bytes) else body,
            timeout=10,
        )
        assert code == 400
    assert time.monotonic() < deadline
    response = predict_stub.Predict(_request(_wave()), timeout=30)
    assert response.model_spec.version.value == 2
    assert _rest(f"{base}:predict", {"inputs": _wave().tolist()})[0] == 200


def test_graph_errors_map_to_invalid_argument(server, predict_stub, monkeypatch):
    """With the server's own length check out of the way, the graph's assert answers (cleaned up)."""
    monkeypatch.setitem(server._servables[2].info, "min_samples", 1)
    with pytest.raises(grpc.RpcError) as info:
        predict_stub.Predict(_request(np.zeros((1, 100), np.float32)), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("model error: assertion failed: [waveform too short")
    assert "Graph execution error" not in info.value.details()


def test_unexpected_error_is_internal_and_server_keeps_serving(server, predict_stub, monkeypatch):
    servable = server._servables[2]

    def boom(waveform):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(servable.default, "run", boom)
    with pytest.raises(grpc.RpcError) as info:
        predict_stub.Predict(_request(_wave()), timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL and "kaboom" in info.value.details()
    code, payload = _rest(
        f"{server.rest_url}/v1/models/{MODEL}:predict", {"inputs": _wave().tolist()}
    )
    assert code == 500 and "kaboom" in payload["error"]
    monkeypatch.undo()
    assert predict_stub.Predict(_request(_wave()), timeout=30).model_spec.version.value == 2


# -- versions, binding, lifecycle -------------------------------------------------------------------


def test_new_version_is_picked_up_without_restart(exported, tmp_path):
    model_dir = str(tmp_path / MODEL)
    os.makedirs(model_dir)
    _copy_version(exported["version_dir"], model_dir, 1)
    with (
        DevServer(
            model_dir, MODEL, port=AUTO_PORT, rest_api_port=AUTO_PORT, poll_seconds=0.2
        ) as srv,
        GrpcClient(srv.grpc_target, MODEL) as client,
    ):
        assert [s["version"] for s in client.status()["model_version_status"]] == ["1"]
        os.makedirs(os.path.join(model_dir, ".tmp-3-123", "variables"))  # half-written: ignored
        os.makedirs(os.path.join(model_dir, "notaversion"))
        _copy_version(exported["version_dir"], model_dir, 2)
        deadline = time.monotonic() + 30
        while srv.versions() != [2, 1]:
            assert time.monotonic() < deadline, srv.versions()
            time.sleep(0.1)
        status = client.status()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [
            ("2", "AVAILABLE"),
            ("1", "AVAILABLE"),
        ]
        assert client.predict_response(_wave()).model_spec.version.value == 2  # default: newest
        code, payload = _rest(
            f"{srv.rest_url}/v1/models/{MODEL}:predict", {"inputs": _wave().tolist()}
        )
        assert code == 200

        # a broken newest version is reported and skipped; the good ones keep serving
        broken = os.path.join(model_dir, ".tmp-5")
        os.makedirs(broken)
        with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
            f.write(b"not a saved model")
        os.rename(broken, os.path.join(model_dir, "5"))
        deadline = time.monotonic() + 30
        while True:
            status = {s["version"]: s for s in client.status()["model_version_status"]}
            if "5" in status and status["5"]["state"] == "END":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert (
            status["5"]["status"]["error_code"] != "OK" and status["5"]["status"]["error_message"]
        )
        assert client.predict_response(_wave()).model_spec.version.value == 2

        # latest-2 policy: a third good version unloads the oldest
        _copy_version(exported["version_dir"], model_dir, 3)
        deadline = time.monotonic() + 30
        while srv.versions() != [3, 2]:
            assert time.monotonic() < deadline, srv.versions()
            time.sleep(0.1)
        status = {s["version"]: s["state"] for s in client.status()["model_version_status"]}
        assert status["1"] == "END" and status["3"] == "AVAILABLE"
        with (
            GrpcClient(srv.grpc_target, MODEL, version=1) as old,
            pytest.raises(ServingError) as info,
        ):
            old.predict(_wave())
        assert info.value.code == "NOT_FOUND"


def _listening_addresses(port: int) -> list[str]:
    """Local addresses listening on `port`, from /proc/net/tcp{,6} (no traffic needed)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # LISTEN
                    if len(address) == 8:
                        found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                    else:
                        raw = bytes.fromhex(address)
                        found.append(
                            socket.inet_ntop(
                                socket.AF_INET6,
                                b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)),
                            )
                        )
    return found


def test_binds_loopback_by_default(server):
    import inspect

    assert inspect.signature(DevServer).parameters["host"].default == "127.0.0.1"
    assert server.host == "127.0.0.1"  # the fixture passes no host
    assert server._httpd.server_address[0] == "127.0.0.1"
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp")
    import ipaddress

    for port in (server.port, server.rest_api_port):
        found = [ipaddress.ip_address(a) for a in _listening_addresses(port)]
        found = [
            getattr(a, "ipv4_mapped", None) or a for a in found
        ]  # gRPC listens on ::ffff:127.0.0.1
        assert found == [ipaddress.ip_address("127.0.0.1")], (port, found)


@pytest.mark.slow
def test_taken_port_fails_loudly(server, model_dir):
    with pytest.raises(OSError):
        DevServer(model_dir, MODEL, port=server.port, rest_api_port=0).start()
    with pytest.raises(OSError):
        DevServer(model_dir, MODEL, port=0, rest_api_port=server.rest_api_port).start()
    with pytest.raises(FileNotFoundError):
        DevServer(os.path.join(model_dir, "missing"), MODEL, port=0, rest_api_port=0).start()


@pytest.mark.slow
def test_grpc_client_retries_unavailable_until_server_starts(model_dir):
    port = free_port()
    started: list[DevServer] = []

    def start_late():
        time.sleep(0.5)
        started.append(DevServer(model_dir, MODEL, port=port, rest_api_port=0).start())

    thread = threading.Thread(target=start_late, daemon=True)
    thread.start()
    try:
        with GrpcClient(
            f"127.0.0.1:{port}", MODEL, retries=40, backoff_seconds=0.1, timeout_seconds=10
        ) as client:
            out = client.predict(_wave())
            assert out["face_feature"].shape == (1, 32)
            assert client.retries_made >= 1
    finally:
        thread.join(timeout=30)
        for srv in started:
            srv.stop()


def test_grpc_client_gives_up_after_retries():
    with GrpcClient(
        f"127.0.0.1:{free_port()}", MODEL, retries=2, backoff_seconds=0.01, timeout_seconds=2
    ) as client:
        with pytest.raises(ServingError) as info:
            client.status()
    assert info.value.code == "UNAVAILABLE" and client.retries_made == 2
    rest = RestClient(
        f"http://127.0.0.1:{free_port()}", MODEL, retries=1, backoff_seconds=0.01, timeout_seconds=2
    )
    with pytest.raises(ServingError) as info:
        rest.status()
    assert info.value.code == "UNAVAILABLE" and rest.retries_made == 1


def test_serve_function_runs_until_stopped(model_dir):
    ready: list[DevServer] = []
    thread = threading.Thread(
        target=serve,
        kwargs=dict(
            model_base_path=model_dir,
            model_name=MODEL,
            port=AUTO_PORT,
            rest_api_port=AUTO_PORT,
            ready_callback=ready.append,
        ),
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not ready:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    srv = ready[0]
    try:
        assert srv.rest_url.startswith("http://127.0.0.1:")
        assert _rest(f"{srv.rest_url}/v1/models/{MODEL}")[0] == 200
    finally:
        srv.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_bench_serve_ceiling_batches_as_the_batching_server_would():
    from s2f_tf.app.bench_serve import _merged
    from serving.batching import BatchingParameters

    wave = np.arange(2 * 5, dtype=np.float32).reshape(2, 5)  # a request of 2 clips
    params = BatchingParameters(max_batch_size=8, allowed_batch_sizes=(1, 2, 4, 8))
    batch, count = _merged(wave, 3, params)  # 3 requests, 6 rows, padded to 8 with the first row
    assert count == 3 and batch.shape == (8, 5)
    np.testing.assert_array_equal(batch[:6], np.concatenate([wave] * 3))
    np.testing.assert_array_equal(batch[6:], np.stack([wave[0]] * 2))
    batch, count = _merged(wave, 8, params)  # 16 rows would not fit: 4 requests a batch
    assert count == 4 and batch.shape == (8, 5)


def test_bench_serve_reports_expected_keys(model_dir):
    from s2f_tf.app.bench_serve import as_text, bench_serve

    result = bench_serve(
        model_dir, MODEL, requests=6, concurrency=(1, 2), time_limit_seconds=60, rounds=2, warmup=2
    )
    json.dumps(result)
    assert {
        "latency_overhead",
        "throughput_ratio",
        "levels",
        "version",
        "samples",
        "batch_size",
        "meets_target",
        "truncated",
    } <= set(result)
    assert result["version"] == 2 and result["samples"] == CLIP
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
    for level in result["levels"]:
        for mode in ("in_process", "server", "server_batching"):
            assert {"p50_ms", "p99_ms", "requests_per_second", "requests"} <= set(level[mode])
            assert level[mode]["requests"] == 6
    assert result["latency_overhead"] > -1 and result["throughput_ratio"] > 0
    assert result["batching_throughput_ratio"] > 0
    # perfect batching's ceiling: level 2's requests merged into calls of 2 rows, 2 calls a round
    low, high = result["levels"]
    assert "in_process_merged" not in low and high["in_process_merged"]["calls"] == 4
    assert result["batching_ceiling_ratio"] == high["batching_ceiling_ratio"] > 0
    assert 0 < high["batching_efficiency"] and result["batching_over_one_caller"] > 0
    # the terminal form: a row per level and mode, the merged call beside level 2, then the figures
    lines = as_text(result).splitlines()
    assert lines[0].split() == ["concurrency", "mode", "p50", "ms", "p99", "ms", "requests/s"]
    assert [ln.split()[:2] for ln in lines[1:8]] == [
        ["1", "in_process"],
        ["1", "server"],
        ["1", "server_batching"],
        ["2", "in_process"],
        ["2", "server"],
        ["2", "server_batching"],
        ["2", "in_process_merged"],
    ]
    assert any(
        ln.split() == ["batching_ceiling_ratio:", str(result["batching_ceiling_ratio"])]
        for ln in lines[8:]
    )
    # every batching-server request ran in some batch (warm-up and measured: 2 + 2 + 6 + 6 at batch 1)
    assert set(result["batch_sizes"]) <= {"1", "2", "4", "8", "16", "32"}
    assert 0 < sum(int(k) * v for k, v in result["batch_sizes"].items()) >= 8
