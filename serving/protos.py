"""The wire format client and server share: numpy <-> TensorProto, dtype names, and TF Serving's
metadata/status responses as its REST API prints them.

Tensors travel as raw `tensor_content` bytes (one copy, no per-element protobuf fields); a proto
that carries typed value fields instead (what `tf.make_tensor_proto` writes for some dtypes) is
decoded by TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf  # at the top: tensorflow.core.* and tensorflow_serving.apis load all of TF anyway
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from s2f_tf import contract

DEFAULT_MAX_MESSAGE_BYTES = (
    64 << 20
)  # gRPC message limit (both ends) and the dev server's REST body limit

# numpy dtype <-> TensorProto dtype enum, for the types this model and its clients use.
NP_TO_DT = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.float16): types_pb2.DT_HALF,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.int8): types_pb2.DT_INT8,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.uint16): types_pb2.DT_UINT16,
    np.dtype(np.uint32): types_pb2.DT_UINT32,
    np.dtype(np.uint64): types_pb2.DT_UINT64,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
}
DT_TO_NP = {v: k for k, v in NP_TO_DT.items()}


def dtype_name(dtype_enum: int) -> str:
    """'float32' for DT_FLOAT, ...; the enum number for unknown values."""
    np_dtype = DT_TO_NP.get(dtype_enum)
    if np_dtype is not None:
        return np_dtype.name
    name = (
        types_pb2.DataType.Name(dtype_enum) if dtype_enum in types_pb2.DataType.values() else None
    )
    return name[3:].lower() if name else f"dtype#{dtype_enum}"


def ndarray_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto with the array's bytes in `tensor_content` (one copy, no per-element fields)."""
    array = np.ascontiguousarray(array)
    dt = NP_TO_DT.get(array.dtype)
    if dt is None:
        return tf.make_tensor_proto(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape]
    )
    return tensor_pb2.TensorProto(dtype=dt, tensor_shape=shape, tensor_content=array.tobytes())


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The array of a TensorProto: zero-copy view of `tensor_content` when present (read-only), else
    TF's own decoding of the typed value fields. Raises ValueError on a malformed proto."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor shape {shape} has a negative dimension")
    np_dtype = DT_TO_NP.get(proto.dtype)
    if proto.tensor_content and np_dtype is not None:
        content = proto.tensor_content
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(content) != count * np_dtype.itemsize:
            raise ValueError(
                f"tensor_content has {len(content)} bytes, shape {shape} of {np_dtype.name} "
                f"needs {count * np_dtype.itemsize}"
            )
        return np.frombuffer(content, np_dtype).reshape(shape)
    return tf.make_ndarray(proto)


def metadata_to_dict(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    """GetModelMetadataResponse as TF Serving's REST API prints it:
    {"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {name: SignatureDef}}}}."""
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    if "signature_def" in response.metadata:
        response.metadata["signature_def"].Unpack(sigmap)
    opts = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **opts),
        "metadata": {"signature_def": json_format.MessageToDict(sigmap, **opts)},
    }


def status_to_dict(response: get_model_status_pb2.GetModelStatusResponse) -> dict:
    """GetModelStatusResponse as TF Serving's REST API prints it: {"model_version_status": [...]}."""
    return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def model_info_from_metadata(metadata: dict) -> dict:
    """The export's model info (contract.INFO_FIELDS: clip_samples, min_samples, ...) from metadata in
    TF Serving's REST JSON layout (`metadata_to_dict`, or the REST API's own answer): the defaults of
    the contract.INFO_SIGNATURE signature's inputs. {} for an export without that signature."""
    sigs = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    defaults = sigs.get(contract.INFO_SIGNATURE, {}).get("defaults", {})
    info = {}
    for name in contract.INFO_FIELDS:
        values = defaults.get(name, {}).get("int64_val") or defaults.get(name, {}).get("int_val")
        if values:
            info[name] = int(values[0])
    return info
