"""numpy arrays <-> TensorProto, with the conventions TF Serving uses.

Predict responses carry values in the typed ``*_val`` field of their dtype,
as TensorFlow's ``Tensor::AsProtoField`` writes them (TF Serving's default),
or in ``tensor_content`` (raw little-endian bytes, ``Tensor::AsProtoTensorContent``)
when the server runs with ``--enable_serialization_as_tensor_content``
(`encode_output`).  The clients send ``tensor_content`` (`to_tensor_proto`).
`to_numpy` decodes either, as ``Tensor::FromProto`` does: a short value list
is extended with its last value, a long one cut to the shape.
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


_ENUM_OF = {}            # numpy dtype -> DataType enum, filled on first use


def dtype_enum_of(array: np.ndarray) -> int:
    """The DataType enum of a numpy array (strings/bytes are DT_STRING)."""
    dtype = array.dtype
    enum = _ENUM_OF.get(dtype)
    if enum is None:
        if dtype.kind in ("S", "U", "O"):
            enum = types_pb2.DT_STRING
        else:
            enum = tf.dtypes.as_dtype(dtype).as_datatype_enum
        _ENUM_OF[dtype] = enum
    return enum


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
    return fill_tensor_proto(tensor_pb2.TensorProto(), value)


def fill_tensor_proto(proto: tensor_pb2.TensorProto,
                      value) -> tensor_pb2.TensorProto:
    """Writes `value` into `proto` (cleared first) as `to_tensor_proto`
    encodes it; returns `proto`.

    Filling the field of a request in place (``request.inputs[alias]``)
    saves building a TensorProto and copying it in, which for a large
    message costs more than the encoding itself.
    """
    proto.Clear()
    array = np.asarray(value)
    if array.dtype.kind in ("S", "U", "O"):
        proto.dtype = types_pb2.DT_STRING
        _set_shape(proto, array.shape)
        proto.string_val.extend(
            item.encode("utf-8") if isinstance(item, str) else bytes(item)
            for item in array.reshape(-1))
        return proto
    dtype_enum = dtype_enum_of(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "="
                                       and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    proto.dtype = dtype_enum
    _set_shape(proto, array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def _set_shape(proto: tensor_pb2.TensorProto, shape) -> None:
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add(size=int(size))
    if not shape:                        # a scalar: shape present, no dims
        proto.tensor_shape.SetInParent()


# -- typed *_val fields (Tensor::AsProtoField) -----------------------------
# Packed repeated fields of fixed-width values are written as protobuf wire
# bytes and merged in: one copy of the array instead of a Python float per
# element (about 25x faster for a 256x4x4 float32 output).
_PACKED_TAGS = {          # numpy dtype -> (wire tag of the packed field, view)
    np.dtype(np.float32): (b"\x2a", "<f4"),     # float_val = 5
    np.dtype(np.float64): (b"\x32", "<f8"),     # double_val = 6
    np.dtype(np.complex64): (b"\x4a", "<c8"),   # scomplex_val = 9 (re, im)
    np.dtype(np.complex128): (b"\x62", "<c16"), # dcomplex_val = 12
}
_LIST_FIELDS = {
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_QINT8: "int_val",
    types_pb2.DT_QUINT8: "int_val", types_pb2.DT_QINT16: "int_val",
    types_pb2.DT_QUINT16: "int_val", types_pb2.DT_QINT32: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def encode_output(value, tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """A Predict output as TF Serving encodes it.

    tensor_content=False (TF Serving's default): dtype, shape and every value
    in the dtype's typed field (float_val, int_val, ..., half_val as raw
    uint16 bits), as ``Tensor::AsProtoField``; a zero-element tensor carries
    no values.  tensor_content=True: raw bytes, as
    ``--enable_serialization_as_tensor_content``.
    """
    return encode_output_into(tensor_pb2.TensorProto(), value, tensor_content)


def encode_output_into(proto: tensor_pb2.TensorProto, value,
                       tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """`encode_output` written into `proto` (cleared first), e.g. straight
    into ``response.outputs[alias]``; returns `proto`."""
    array = np.asarray(value)
    if tensor_content or array.dtype.kind in ("S", "U", "O"):
        return fill_tensor_proto(proto, array)
    proto.Clear()
    dtype_enum = dtype_enum_of(array)
    proto.dtype = dtype_enum
    _set_shape(proto, array.shape)
    if array.size == 0:
        return proto
    packed = _PACKED_TAGS.get(array.dtype)
    if packed is not None:
        tag, little = packed
        data = np.ascontiguousarray(array, dtype=little).tobytes()
        proto.MergeFromString(tag + _varint(len(data)) + data)
        return proto
    if dtype_enum in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        proto.half_val.extend(np.ascontiguousarray(array).view(np.uint16)
                              .ravel().tolist())
        return proto
    field = _LIST_FIELDS.get(dtype_enum)
    if field is None:
        return fill_tensor_proto(proto, array)
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


# TensorFlow's TensorShape::MaxDimensions() (tensor_shape.cc): not 64.
MAX_RANK = 254
_INT64_MAX = (1 << 63) - 1
# The most elements the server builds for one request (all its inputs
# together) and writes into one answer.  A TensorProto may declare a shape
# far larger than the values it carries (TensorFlow fills in the rest); a
# shape beyond this is refused before anything is allocated, instead of
# occupying the server for minutes.  1 << 26 float32 elements are 256 MiB.
MAX_REQUEST_ELEMENTS = 1 << 26
MAX_RESPONSE_ELEMENTS = 1 << 26
# Kept for callers of the earlier name.
MAX_EXPANDED_ELEMENTS = MAX_REQUEST_ELEMENTS

# dtype -> the typed field Tensor::FromProtoField reads (tensor.cc).
_READ_FIELDS = dict(_LIST_FIELDS)
_READ_FIELDS.update({
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
    types_pb2.DT_HALF: "half_val", types_pb2.DT_BFLOAT16: "half_val",
    types_pb2.DT_STRING: "string_val",
})


class TensorParseError(ValueError):
    """A TensorProto that TensorFlow's Tensor::FromProto would refuse."""


class TensorTooLarge(TensorParseError):
    """A TensorProto declaring more elements than the server builds."""


def declared_elements(proto: tensor_pb2.TensorProto) -> int:
    """The element count of a TensorProto's shape, checked as TensorFlow's
    TensorShape::IsValid checks it (rank, negative sizes, int64 overflow)."""
    dims = proto.tensor_shape.dim
    if len(dims) > MAX_RANK:
        raise TensorParseError(
            f"shape has rank {len(dims)}; TensorFlow allows at most "
            f"{MAX_RANK} dimensions")
    count = 1
    for d in dims:
        if d.size < 0:
            raise TensorParseError(f"shape has negative size {d.size}")
        count *= int(d.size)
        if count > _INT64_MAX:
            raise TensorParseError(
                f"shape {[int(x.size) for x in dims]} has more elements "
                f"than int64 can count")
    return count


def _decode_string_list(content: bytes, n: int) -> np.ndarray:
    """TensorFlow's port::EncodeStringList format: n varint lengths, then
    the bytes of the n strings."""
    lengths, pos = [], 0
    for _ in range(n):
        value = shift = 0
        while True:
            if pos >= len(content) or shift > 63:
                raise TensorParseError(
                    "tensor_content is not an encoded list of "
                    f"{n} strings")
            byte = content[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(value)
    if pos + sum(lengths) != len(content):
        raise TensorParseError(
            f"tensor_content has {len(content)} bytes; the encoded list of "
            f"{n} strings needs {pos + sum(lengths)}")
    out = np.empty(n, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = bytes(content[pos:pos + length])
        pos += length
    return out


def to_numpy(proto: tensor_pb2.TensorProto,
             max_elements: int | None = None) -> np.ndarray:
    """Decodes a TensorProto from either ``tensor_content`` or ``*_val``.

    Follows TensorFlow's Tensor::FromProto (tensor.cc): the shape must be
    valid (rank <= 254, no negative size, no int64 overflow), the dtype a
    real one (not DT_INVALID, a *_REF type, DT_RESOURCE or DT_VARIANT, which
    a numpy array cannot hold), ``tensor_content`` exactly the shape's size
    (bools 0 or 1); otherwise the dtype's typed field is read, a short list
    extended with its last value (zeros if empty), a long one cut to the
    shape.  Raises TensorParseError, or TensorTooLarge when the shape holds
    more than `max_elements` elements.
    """
    num_elements = declared_elements(proto)
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    dtype_enum = proto.dtype
    if dtype_enum == types_pb2.DT_STRING:
        dtype = np.dtype(object)
    elif dtype_enum in (types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT):
        raise TensorParseError(
            f"dtype {dtype_name(dtype_enum)} cannot be sent as a value")
    else:
        try:
            if dtype_enum == types_pb2.DT_INVALID:
                raise ValueError
            dtype = numpy_dtype(dtype_enum)
        except (TypeError, ValueError, KeyError) as e:
            raise TensorParseError(f"invalid dtype {dtype_name(dtype_enum)}"
                                   ) from e
        if dtype_enum >= 100 or dtype.kind not in "biufcV" and (
                dtype.name != "bfloat16"):
            raise TensorParseError(f"invalid dtype {dtype_name(dtype_enum)}")
    if max_elements is not None and num_elements > max_elements:
        raise TensorTooLarge(
            f"shape {shape} asks for {num_elements} elements; more than "
            f"{max_elements} in one request is refused")
    if num_elements == 0:
        return np.empty(shape, dtype=dtype)
    content = proto.tensor_content
    if content:
        if dtype_enum == types_pb2.DT_STRING:
            return _decode_string_list(content, num_elements).reshape(shape)
        expected = num_elements * dtype.itemsize
        if len(content) != expected:
            raise TensorParseError(
                f"tensor_content has {len(content)} bytes; shape {shape} of "
                f"{dtype_name(dtype_enum)} needs {expected}")
        array = (np.frombuffer(content, dtype=dtype.newbyteorder("<"))
                 .astype(dtype, copy=True).reshape(shape))
        if dtype.kind == "b" and np.frombuffer(content, np.uint8).max() > 1:
            raise TensorParseError("tensor_content of a bool tensor holds a "
                                   "byte other than 0 or 1")
        return array
    try:
        return _from_fields(proto, dtype_enum, dtype, num_elements, shape)
    except (TypeError, ValueError, OverflowError) as e:
        if isinstance(e, TensorParseError):
            raise
        raise TensorParseError(
            f"values do not fit {dtype_name(dtype_enum)}: {e}") from e


# dtype -> (field number, little-endian dtype) of the typed fields whose
# packed wire bytes are the values themselves.
_PACKED_READ = {
    types_pb2.DT_FLOAT: (5, "<f4"),        # float_val
    types_pb2.DT_DOUBLE: (6, "<f8"),       # double_val
}


def _read_varint(data: bytes, pos: int) -> tuple:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _packed_values(proto: tensor_pb2.TensorProto, field_number: int,
                   little: str):
    """The values of a packed fixed-width repeated field, read from the
    proto's wire bytes in one copy (a Python float per element otherwise:
    about 100x slower for a 256x32x32 float32 output).  None if the field
    is (also) written unpacked, element by element, which the caller then
    reads the generic way."""
    data = proto.SerializeToString()
    chunks, pos, end = [], 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type == 1:
            if number == field_number:
                return None
            pos += 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            if number == field_number:
                chunks.append(data[pos:pos + length])
            pos += length
        elif wire_type == 5:
            if number == field_number:
                return None
            pos += 4
        else:
            return None
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return np.frombuffer(raw, dtype=little)


def _from_fields(proto, dtype_enum: int, dtype: np.dtype, num_elements: int,
                 shape: list) -> np.ndarray:
    field = _READ_FIELDS.get(dtype_enum)
    values = getattr(proto, field) if field else ()
    packed = _PACKED_READ.get(dtype_enum)
    flat = None
    if packed is not None and len(values) > 16:
        flat = _packed_values(proto, *packed)
        if flat is not None and len(flat) != len(values):
            flat = None                  # not what the field holds: read it
    if flat is not None:
        flat = flat.astype(dtype, copy=False)
    elif dtype_enum == types_pb2.DT_STRING:
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    elif dtype_enum in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        flat = np.array(values, dtype=np.int64).astype(np.uint16).view(dtype)
    elif dtype.kind == "c":
        pairs = np.array(values, dtype=np.float64)
        pairs = pairs[:len(pairs) // 2 * 2]
        flat = (pairs[0::2] + 1j * pairs[1::2]).astype(dtype)
    else:
        # int8/uint8/int16 come from the int32 field without a range check.
        flat = np.array(values).astype(dtype) if len(values) else (
            np.empty(0, dtype))
    if len(flat) == 0:
        out = np.zeros(num_elements, dtype=dtype) if dtype != object else (
            np.full(num_elements, b"", dtype=object))
    elif len(flat) >= num_elements:
        out = flat[:num_elements].copy()
    else:
        out = np.empty(num_elements, dtype=dtype)
        out[:len(flat)] = flat
        out[len(flat):] = flat[-1]
    return out.reshape(shape)
