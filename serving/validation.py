"""What the development server refuses, and how it says so: `RequestError` (a gRPC status code and
the message the client sees), TF Serving's status -> HTTP mapping, and the checks every request
passes before the model runs (input and output names, the input's dtype, rank, clip length or
feature size, batch size and values), for PredictRequest protos and REST JSON alike. (An unknown
signature name is refused by serving.servable.Servable.signature.)

The input rules are the s2f contract's (`contract.check_waveform` for SIGNATURE's waveform,
`contract.check_feature` for DECODE_SIGNATURE's face feature, `contract.check_finite`); their
`InputError`s become INVALID_ARGUMENT with the same message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2

from s2f_tf import contract
from serving.protos import dtype_name, tensor_proto_to_ndarray

_CODE_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}
# TF Serving's status -> HTTP mapping (http_server.cc); 413 is this server's answer to a body over
# the size limit (TF Serving has no such check).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class RequestError(Exception):
    """A request the server refuses: a gRPC status code and the message the client sees."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def grpc_code(tf_error_code: int) -> grpc.StatusCode:
    """The gRPC status of a TensorFlow error code (they share the canonical numbering)."""
    return _CODE_BY_VALUE.get(tf_error_code, grpc.StatusCode.INTERNAL)


class ServableInput(Protocol):
    """What the checks read of one served signature (serving.servable.Signature has it)."""

    name: str  # the signature's name
    input_name: str
    input_dtype: int  # TensorProto dtype enum
    input_rank: int | None
    output_names: tuple[str, ...]
    info: dict  # assets.extra/MODEL_INFO_FILE (may be empty)


def _is_decode(servable: ServableInput) -> bool:
    return servable.name == contract.DECODE_SIGNATURE


def expected(servable: ServableInput, max_batch: int) -> str:
    """The input contract in words, for error messages."""
    if _is_decode(servable):
        return contract.describe_feature(servable.info, max_batch)
    return contract.describe_input(
        servable.info, max_batch, dtype_name(servable.input_dtype), servable.input_name
    )


def _invalid(e: contract.InputError) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e))


def check_input_names(servable: ServableInput, names: Iterable[str], max_batch: int) -> None:
    names = sorted(names)
    if names != [servable.input_name]:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"wrong input name(s) {names}: signature {servable.name!r} takes exactly one "
            f"input; {expected(servable, max_batch)}",
        )


def check_output_filter(servable: ServableInput, output_filter: Sequence[str]) -> list[str]:
    """The outputs a PredictRequest asks for (all when the filter is empty); each known, once."""
    outputs = list(output_filter) or list(servable.output_names)
    unknown = [o for o in outputs if o not in servable.output_names]
    if unknown or len(set(outputs)) != len(outputs):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"output_filter {list(output_filter)}: each must appear once and be "
            f"one of {list(servable.output_names)}",
        )
    return outputs


def check_input_header(
    servable: ServableInput, dtype: str, shape: Sequence[int] | None, max_batch: int
) -> None:
    """Validates dtype, rank, emptiness, batch size and clip length (or feature size) before any data
    is decoded."""
    try:
        if _is_decode(servable):
            contract.check_feature(servable.info, dtype, shape, max_batch)
            return
        contract.check_waveform(
            servable.info,
            dtype,
            shape,
            max_batch,
            want_dtype=dtype_name(servable.input_dtype),
            rank=servable.input_rank,
            input_name=servable.input_name,
        )
    except contract.InputError as e:
        raise _invalid(e) from None


def check_input_values(servable: ServableInput, waveform: np.ndarray, max_batch: int) -> None:
    """NaN/Inf would propagate silently through the model: refuse them."""
    try:
        contract.check_finite(
            servable.info,
            waveform,
            max_batch,
            input_name=servable.input_name,
            expected=expected(servable, max_batch),
        )
    except contract.InputError as e:
        raise _invalid(e) from None


def input_from_proto(
    servable: ServableInput, inputs: Mapping[str, tensor_pb2.TensorProto], max_batch: int
) -> np.ndarray:
    """A PredictRequest's `inputs` -> the checked input (a view of tensor_content when it has one)."""
    check_input_names(servable, inputs.keys(), max_batch)
    proto = inputs[servable.input_name]
    shape = None if proto.tensor_shape.unknown_rank else [d.size for d in proto.tensor_shape.dim]
    check_input_header(servable, dtype_name(proto.dtype), shape, max_batch)
    try:
        if proto.tensor_content:
            waveform = tensor_proto_to_ndarray(proto)  # a view of tensor_content: no copy
        else:
            # float_val (TF's typed field). TF would repeat the last value to fill the shape, or zero
            # fill without values; for audio or a feature that is a client bug, so the count must match.
            count = int(np.prod(shape, dtype=np.int64))
            if len(proto.float_val) != count:
                raise ValueError(
                    f"{len(proto.float_val)} values for shape {contract.shape_str(shape)} "
                    f"({count} needed, in tensor_content or float_val)"
                )
            waveform = np.asarray(proto.float_val, np.float32).reshape(shape)
    except Exception as e:  # noqa: BLE001 -- any parse failure is the client's
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed tensor for input '{servable.input_name}': {e}",
        ) from None
    if list(waveform.shape) != list(shape):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed tensor for input "
            f"'{servable.input_name}': values do not fill shape {contract.shape_str(shape)}",
        )
    check_input_values(servable, waveform, max_batch)
    return waveform


def input_from_json(servable: ServableInput, value: Any, max_batch: int) -> np.ndarray:
    """A REST request's decoded input (nested lists of numbers) -> the checked float32 array."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"ragged or malformed input: {expected(servable, max_batch)}",
        ) from None
    if array.dtype.kind in "iuf" and array.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(np.float32)  # JSON numbers; overflow -> Inf
    kind = {"b": "bool", "U": "string", "S": "string", "O": "object"}.get(
        array.dtype.kind, array.dtype.name
    )
    check_input_header(
        servable, "float32" if array.dtype == np.float32 else kind, array.shape, max_batch
    )
    check_input_values(servable, array, max_batch)
    return array
