"""numpy arrays <-> TensorProto, with the conventions TF Serving uses.

Responses carry numeric tensors in ``tensor_content`` (raw little-endian
bytes); requests and responses from other servers may use the typed
``*_val`` fields instead, which `to_numpy` decodes as TensorFlow does
(a short value list is extended with its last value).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_VAL_FIELDS = (
    "half_val", "float_val", "double_val", "int_val", "string_val",
    "scomplex_val", "int64_val", "bool_val", "dcomplex_val", "uint32_val",
    "uint64_val", "float8_val",
)


def dtype_name(dtype_enum: int) -> str:
    """The short name TensorFlow prints for a DataType: "float", "int32"..."""
    try:
        return types_pb2.DataType.Name(dtype_enum)[3:].lower()
    except ValueError:
        return f"unknown dtype {dtype_enum}"


def dtype_enum_of(array: np.ndarray) -> int:
    """The DataType enum of a numpy array (strings/bytes are DT_STRING)."""
    if array.dtype.kind in ("S", "U", "O"):
        return types_pb2.DT_STRING
    return tf.dtypes.as_dtype(array.dtype).as_datatype_enum


def numpy_dtype(dtype_enum: int) -> np.dtype:
    """The numpy dtype for a DataType enum (DT_STRING -> object)."""
    if dtype_enum == types_pb2.DT_STRING:
        return np.dtype(object)
    return np.dtype(tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype)


def shape_proto(shape) -> tensor_shape_pb2.TensorShapeProto:
    proto = tensor_shape_pb2.TensorShapeProto()
    for size in shape:
        proto.dim.add(size=int(size))
    return proto


def shape_of(proto: tensor_shape_pb2.TensorShapeProto):
    """A TensorShapeProto as a tuple, None for unknown sizes or rank."""
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in proto.dim)


def to_tensor_proto(value) -> tensor_pb2.TensorProto:
    """A numpy array (or array-like) as a TensorProto.

    Numeric tensors go into ``tensor_content``; strings into ``string_val``.
    """
    array = np.asarray(value)
    if array.dtype.kind in ("S", "U", "O"):
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                       tensor_shape=shape_proto(array.shape))
        for item in array.reshape(-1):
            proto.string_val.append(item.encode("utf-8")
                                    if isinstance(item, str) else bytes(item))
        return proto
    dtype_enum = dtype_enum_of(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "="
                                       and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return tensor_pb2.TensorProto(
        dtype=dtype_enum, tensor_shape=shape_proto(array.shape),
        tensor_content=np.ascontiguousarray(array).tobytes())


# A TensorProto may carry fewer values than its shape holds (TensorFlow
# repeats the last one, or fills zeros).  Beyond this many elements such a
# tensor is refused rather than allocated.
MAX_EXPANDED_ELEMENTS = 1 << 26


class TensorParseError(ValueError):
    """A TensorProto whose values do not fit its dtype and shape."""


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decodes a TensorProto from either ``tensor_content`` or ``*_val``.

    Raises TensorParseError where TensorFlow's Tensor::FromProto would fail:
    an unknown or negative dimension, content of the wrong size, or more
    values than elements.
    """
    if proto.tensor_shape.unknown_rank:
        raise TensorParseError("tensor shape has unknown rank")
    shape = []
    for d in proto.tensor_shape.dim:
        if d.size < 0:
            raise TensorParseError(f"tensor shape has negative size {d.size}")
        shape.append(int(d.size))
    num_elements = int(np.prod(shape, dtype=np.int64))
    if proto.dtype in (types_pb2.DT_INVALID,) or proto.dtype >= 100:
        raise TensorParseError(f"invalid dtype {dtype_name(proto.dtype)}")
    if proto.dtype != types_pb2.DT_STRING and proto.tensor_content:
        dtype = numpy_dtype(proto.dtype)
        expected = num_elements * dtype.itemsize
        if len(proto.tensor_content) != expected:
            raise TensorParseError(
                f"tensor_content has {len(proto.tensor_content)} bytes; "
                f"shape {shape} of {dtype_name(proto.dtype)} needs {expected}")
        return (np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<"))
                .astype(dtype, copy=True).reshape(shape))
    carried = 0
    for field in _VAL_FIELDS:
        count = len(getattr(proto, field))
        if field in ("scomplex_val", "dcomplex_val"):
            count //= 2
        if count > num_elements:
            raise TensorParseError(
                f"{field} has {count} values; shape {shape} holds "
                f"{num_elements}")
        carried += count
    if num_elements > max(carried, MAX_EXPANDED_ELEMENTS):
        raise TensorParseError(
            f"shape {shape} asks for {num_elements} elements but the tensor "
            f"carries {carried} values; filling in more than "
            f"{MAX_EXPANDED_ELEMENTS} elements is refused")
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as e:
        raise TensorParseError(str(e)) from e
