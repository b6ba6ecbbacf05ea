"""The development server's gRPC surface: tensorflow.serving.PredictionService (Predict,
GetModelMetadata) and ModelService (GetModelStatus) on the official tensorflow-serving-api stubs,
the guard that turns every failure into a gRPC status, and the gRPC server that hosts them.

The servicers answer for a `backend`, the serving.server.DevServer that owns them (not imported
here: it imports this module). It provides `model_name`, `max_batch`, `metrics`,
`resolve(ModelSpec)`, `metadata_proto(request)` and `status_proto(request)`.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.protos import ndarray_to_tensor_proto
from serving.validation import RequestError, check_output_filter, input_from_proto

log = logging.getLogger("s2f.serving")


def predict_proto(
    backend: Any, request: predict_pb2.PredictRequest, time_remaining: float | None = None
) -> predict_pb2.PredictResponse:
    """PredictRequest -> PredictResponse (raises RequestError)."""
    servable = backend.resolve(request.model_spec)
    signature = servable.signature(request.model_spec.signature_name)
    outputs = check_output_filter(signature, request.output_filter)
    array = input_from_proto(signature, request.inputs, backend.max_batch)
    if time_remaining is not None and time_remaining <= 0:
        raise RequestError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the model ran"
        )
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    result = signature.serve(array, deadline)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = backend.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature.name
    for name in outputs:
        response.outputs[name].CopyFrom(ndarray_to_tensor_proto(result[name]))
    return response


def _grpc_guard(method):
    """Runs a servicer method; RequestError -> its status, anything else -> INTERNAL. The server keeps
    serving whatever a request does."""
    empty = {
        "Predict": predict_pb2.PredictResponse,
        "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataResponse,
        "GetModelStatus": get_model_status_pb2.GetModelStatusResponse,
    }[method.__name__]

    def wrapper(self, request, context):
        started, status = time.perf_counter(), "OK"
        try:
            return method(self, request, context)
        except RequestError as e:
            status = e.code.name
            context.set_code(e.code)
            context.set_details(e.message)
        except Exception as e:
            status = "INTERNAL"
            log.exception("%s failed", method.__name__)
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(f"internal error: {type(e).__name__}: {e}"[:2000])
        finally:
            if method.__name__ == "Predict":
                self.backend.metrics.request(
                    self.backend.model_name,
                    "predict",
                    "GRPC",
                    status,
                    time.perf_counter() - started,
                )
        return empty()

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(self, backend: Any):
        self.backend = backend

    @_grpc_guard
    def Predict(self, request, context):  # noqa: N802 -- gRPC method name
        return predict_proto(self.backend, request, context.time_remaining())

    @_grpc_guard
    def GetModelMetadata(self, request, context):  # noqa: N802
        return self.backend.metadata_proto(request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

    def __init__(self, backend: Any):
        self.backend = backend

    @_grpc_guard
    def GetModelStatus(self, request, context):  # noqa: N802
        return self.backend.status_proto(request)


def start_grpc_server(
    backend: Any,
    host: str,
    port: int,
    max_message_bytes: int,
    max_threads: int,
    max_concurrent_rpcs: int | None,
) -> tuple[grpc.Server, int]:
    """Binds host:port (0: any free port) and starts both services; returns (server, bound port).
    A port that cannot be bound raises OSError."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]  # a taken port fails, never shares
    server = grpc.server(
        futures.ThreadPoolExecutor(max_threads, thread_name_prefix="s2f-grpc"),
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(backend), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(backend), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"gRPC: cannot bind {address}: {e}") from None
    if not bound:
        raise OSError(f"gRPC: cannot bind {address} (in use?)")
    server.start()
    return server, bound
