"""TF Serving's REST JSON, both ways: request bodies to arrays, outputs to JSON text.

The rules of ``tensorflow_serving/util/json_tensor.cc``:

* a body is parsed as rapidjson parses it with TF Serving's flags
  (`parse_json`): bytes after the first value ignored, NaN/Infinity accepted,
  any nesting depth;
* a request is ``{"signature_name", "instances": [...]}`` (row format: one
  value or object per example, stacked on dimension 0) or ``{"inputs": ...}``
  (columnar: one value, or an object of named tensors; keys the signature does
  not name are ignored) -- never both (`request_to_arrays`);
* a value's shape is read from its first element at each level and every
  list must match it (GetDenseTensorShape / FillTensorProto); values take
  the signature's dtype as AddValueToTensor converts them (`json_to_array`);
* answers are ``{"predictions": [...]}`` to row requests and ``{"outputs": ...}``
  to columnar ones, a single output unnamed (`outputs_to_json`), written as
  rapidjson's PrettyWriter writes them; floats as WriteDecimal writes them
  (6 significant digits unless that does not read back, then 9 for float and
  17 for double; ``.0`` appended to integral values), NaN and infinities as
  ``NaN``/``Infinity``/``-Infinity``, byte strings of outputs named
  ``*_bytes`` as ``{"b64": "..."}``.

Every refusal is an INVALID_ARGUMENT `ServingError` with TF Serving's wording
(UNIMPLEMENTED for dtypes JSON cannot carry, as TF Serving).
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import math
import re

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2

from serving import errors, tensors

DEBUG_STRING_BYTES = 256     # JsonValueToDebugString cuts after about this


def debug_json(value) -> str:
    """A JSON value for error messages, cut after 256 characters.

    Written without recursion, so a value nested 500 000 deep costs no more
    than its first 256 characters."""
    out, size = [], 0
    stack = [("v", value)]
    while stack and size <= DEBUG_STRING_BYTES:
        kind, item = stack.pop()
        if kind == "t":
            text = item
        elif isinstance(item, list):
            text = "["
            stack.append(("t", "]"))
            for i in range(len(item) - 1, -1, -1):
                stack.append(("v", item[i]))
                if i:
                    stack.append(("t", ","))
        elif isinstance(item, dict):
            text = "{"
            stack.append(("t", "}"))
            keys = list(item)
            for i in range(len(keys) - 1, -1, -1):
                stack.append(("v", item[keys[i]]))
                stack.append(("t", json.dumps(keys[i], ensure_ascii=False) + ":"))
                if i:
                    stack.append(("t", ","))
        else:
            text = _scalar_text(item)
        out.append(text)
        size += len(text)
    text = "".join(out)
    return text if size <= DEBUG_STRING_BYTES else text[:DEBUG_STRING_BYTES]


def _scalar_text(item) -> str:
    if isinstance(item, float):
        if math.isnan(item):
            return "NaN"
        if math.isinf(item):
            return "Infinity" if item > 0 else "-Infinity"
        return repr(item)
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)
    return json.dumps(item)


def _json_type(value) -> str:
    """rapidjson's type names, as TF Serving prints them."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value, dtype_enum: int) -> errors.ServingError:
    return errors.invalid_argument(
        f"JSON Value: {debug_json(value)} Type: {_json_type(value)} is not "
        f"of expected type: {tensors.dtype_name(dtype_enum)}")


def _is_b64(value) -> bool:
    return (isinstance(value, dict) and len(value) == 1 and "b64" in value
            and isinstance(value["b64"], str))


def _is_value(value) -> bool:
    """A leaf of a tensor: anything but a list or a non-b64 object."""
    return not isinstance(value, (list, dict)) or _is_b64(value)


# ---------------------------------------------------------------------------
# JSON value -> array (GetDenseTensorShape, FillTensorProto, AddValueToTensor)
# ---------------------------------------------------------------------------

def dense_shape(value) -> list:
    """The shape of a JSON value, from its first element at every level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _check_dense(value, shape: list) -> None:
    """Every list has the size of `shape` at its level, every leaf is at the
    last level: TF Serving's FillTensorProto messages otherwise."""
    rank = len(shape)
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list):
            if level >= rank:
                raise errors.invalid_argument(
                    f"Encountered list at unexpected level: {level} "
                    f"expected < {rank}")
            if len(item) != shape[level]:
                raise errors.invalid_argument(
                    f"Encountered list at unexpected size: {len(item)} at "
                    f"level: {level} expected size: {shape[level]}")
            stack.extend((v, level + 1) for v in reversed(item))
        elif level != rank:
            raise errors.invalid_argument(
                f"JSON Value: {debug_json(item)} found at incorrect level: "
                f"{level + 1} in the JSON DOM. Expected at level: {rank}")


_INT_RANGE = {     # rapidjson IsInt / IsInt64 / IsUint / IsUint64
    types_pb2.DT_INT32: (-2**31, 2**31 - 1), types_pb2.DT_INT16: (-2**31, 2**31 - 1),
    types_pb2.DT_INT8: (-2**31, 2**31 - 1), types_pb2.DT_UINT8: (-2**31, 2**31 - 1),
    types_pb2.DT_INT64: (-2**63, 2**63 - 1), types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_is_exact_type = np.frompyfunc(type, 1, 1)


def json_to_array(value, dtype_enum: int) -> np.ndarray:
    """A JSON value as an array of the signature's dtype (AddValueToTensor)."""
    shape = dense_shape(value)
    if len(shape) > tensors.MAX_RANK:
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(value)} is nested {len(shape)} deep; "
            f"TensorFlow allows at most {tensors.MAX_RANK} dimensions")
    _check_dense(value, shape)
    flat = _flatten(value, shape)
    if dtype_enum == types_pb2.DT_STRING:
        out = np.empty(len(flat), dtype=object)
        for i, item in enumerate(flat):
            out[i] = _string_value(item, dtype_enum)
        return out.reshape(shape)
    if dtype_enum == types_pb2.DT_BOOL:
        for item in flat:
            if not isinstance(item, bool):
                raise _type_error(item, dtype_enum)
        return np.array(flat, dtype=bool).reshape(shape)
    if dtype_enum in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        types = set(_is_exact_type(np.array(flat, dtype=object)).tolist()) \
            if flat else set()
        if not types <= {float, int}:
            bad = next(v for v in flat if type(v) not in (float, int))
            raise _type_error(bad, dtype_enum)
        dtype = np.float32 if dtype_enum == types_pb2.DT_FLOAT else np.float64
        with np.errstate(over="ignore"):
            try:
                array = np.array(flat, dtype=np.float64)
            except OverflowError:        # an integer beyond a double: inf
                array = np.array([float("inf") if isinstance(v, int) and v > 0
                                  else float("-inf") if isinstance(v, int)
                                  and v < 0 and abs(v) > 1e308 else float(v)
                                  for v in flat])
            return array.astype(dtype).reshape(shape)
    if dtype_enum in _INT_RANGE:
        low, high = _INT_RANGE[dtype_enum]
        for item in flat:
            if type(item) is not int or not low <= item <= high:
                raise _type_error(item, dtype_enum)
        dtype = tensors.numpy_dtype(dtype_enum)
        # int8/uint8/int16 wrap as TF Serving's static_cast does.
        return (np.array(flat, dtype=np.int64 if dtype_enum != types_pb2.DT_UINT64
                         else np.uint64).astype(dtype).reshape(shape))
    first = flat[0] if flat else value
    raise errors.ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {debug_json(first)} to type: "
        f"{tensors.dtype_name(dtype_enum)}")


def _flatten(value, shape: list) -> list:
    if not shape:
        return [value]
    flat = value
    for _ in range(len(shape) - 1):
        flat = [v for sub in flat for v in sub]
    return flat


def _string_value(item, dtype_enum: int) -> bytes:
    if isinstance(item, str):
        try:
            return item.encode("utf-8")
        except UnicodeEncodeError:   # bytes that were not UTF-8, or a lone
            try:                     # \ud800 escape: kept as sent
                return item.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                return item.encode("utf-8", "surrogatepass")
    if isinstance(item, dict):
        if not _is_b64(item):
            raise errors.invalid_argument(
                f"JSON Value: {debug_json(item)} not formatted correctly for "
                f"base64 data")
        try:
            return base64.b64decode(item["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise errors.invalid_argument(
                f"Unable to base64 decode") from e
    raise _type_error(item, dtype_enum)


def request_to_arrays(doc: dict, input_infos) -> tuple:
    """Predict JSON body -> ({alias: array}, row_format)."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(doc)} Not formatted correctly expecting "
            f"only one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        return _instances_to_arrays(doc, input_infos), True
    if has_inputs:
        value = doc["inputs"]
        if not isinstance(value, dict) or _is_b64(value):
            if len(input_infos) > 1:
                raise errors.invalid_argument(
                    "inputs is a plain value/list, but expecting an object as "
                    "multiple input tensors required as per tensorinfo_map")
            (name, info), = input_infos.items()
            return {name: json_to_array(value, info.dtype)}, False
        arrays = {}
        for name, info in sorted(input_infos.items()):
            if name not in value:
                raise errors.invalid_argument(
                    f"Missing named input: {name} in 'inputs' object.")
            arrays[name] = json_to_array(value[name], info.dtype)
        # Keys the signature does not name are ignored, as in TF Serving.
        return arrays, False
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances_to_arrays(doc: dict, input_infos) -> dict:
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(doc)} Expecting 'instances' to be an "
            f"list/array")
    if not instances:
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(doc)} No values in 'instances' array")
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not objects and len(input_infos) > 1:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as "
            "multiple input tensors required as per tensorinfo_map")
    names = sorted(input_infos)
    columns = {k: [] for k in names}
    first_shapes = {}

    def add(i, key, value, keyed):
        where = f"{i} key: {key}" if keyed else f"{i}"
        try:
            array = json_to_array(value, input_infos[key].dtype)
            if key in first_shapes:
                first = first_shapes[key]
                if array.size != int(np.prod(first, dtype=np.int64)):
                    raise errors.invalid_argument(
                        f"Expecting tensor size: "
                        f"{int(np.prod(first, dtype=np.int64))} but got: "
                        f"{array.size}")
                if list(array.shape) != first:
                    raise errors.invalid_argument(
                        f"Expecting shape {_shape_text(first)} but got: "
                        f"{_shape_text(array.shape)}")
            else:
                first_shapes[key] = list(array.shape)
        except errors.ServingError as e:
            raise errors.invalid_argument(
                f"Failed to process element: {where} of 'instances' list. "
                f"Error: {e}") from e
        columns[key].append(array)

    for i, item in enumerate(instances):
        if objects:
            if not isinstance(item, dict) or _is_b64(item):
                raise errors.invalid_argument(
                    f"Expecting object but got list at item {i} of input "
                    f"list")
            for key, value in item.items():
                if key not in input_infos:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} key: {key} of "
                        f"'instances' list. Error: INVALID_ARGUMENT: JSON "
                        f"object: does not have named input: {key}")
                add(i, key, value, True)
            if sorted(item) != names:
                raise errors.invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. "
                    f"JSON object: {debug_json(item)} keys must be equal "
                    f"to: {','.join(names)}")
        else:
            if isinstance(item, dict) and not _is_b64(item):
                raise errors.invalid_argument(
                    f"Expecting value/list but got object at item {i} of "
                    f"input list")
            add(i, names[0], item, False)
    return {k: np.stack(v) for k, v in columns.items()}


# ---------------------------------------------------------------------------
# Outputs -> JSON (MakeJsonFromTensors, rapidjson PrettyWriter with
# kFormatSingleLineArray, WriteDecimal)
# ---------------------------------------------------------------------------

def _float_tokens(array: np.ndarray) -> np.ndarray:
    """WriteDecimal: absl::StrCat's 6 significant digits when they read back
    to the same value, else max_digits10 (9 float, 17 double); '.0' on
    integral values; NaN, Infinity, -Infinity as raw tokens."""
    is_double = array.dtype == np.float64
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    flat = array.ravel()
    wide = flat.astype(np.float64)
    with np.errstate(all="ignore"):
        tokens = np.char.mod("%.6g", wide)
        back = tokens.astype(np.float64)
        if not is_double:
            back = back.astype(np.float32)
        redo = ~(back == flat) & np.isfinite(flat)
        if redo.any():
            tokens = tokens.astype(object)
            tokens[redo] = np.char.mod("%.17g" if is_double else "%.9g",
                                       wide[redo])
    tokens = tokens.astype(object)
    integral = np.array([("." not in t and "e" not in t) for t in tokens.tolist()],
                        dtype=bool) if flat.size else np.zeros(0, bool)
    finite = np.isfinite(flat)
    tokens[integral & finite] = tokens[integral & finite] + ".0"
    if not finite.all():
        tokens[np.isnan(flat)] = "NaN"
        tokens[np.isposinf(flat)] = "Infinity"
        tokens[np.isneginf(flat)] = "-Infinity"
    return tokens.reshape(array.shape)


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _tokens(array: np.ndarray, alias: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize in (4, 8):
        return _float_tokens(array)
    if kind == "b":
        return np.where(array, "true", "false").astype(object)
    if kind in "iu":
        return array.astype(str).astype(object)
    if kind in ("S", "U", "O"):
        out = np.empty(array.shape, dtype=object)
        for index, item in np.ndenumerate(array):
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            if alias.endswith("_bytes"):
                out[index] = ('{ "b64": "' + base64.b64encode(data).decode()
                              + '" }')
            else:
                out[index] = _json_string(data.decode("utf-8", "replace"))
        return out
    raise errors.invalid_argument(
        f"Failed to write JSON value for tensor type: "
        f"{tensors.dtype_name(tensors.dtype_enum_of(array))}")


def _nest(tokens: np.ndarray, depth: int) -> str:
    """An array as PrettyWriter writes it at `depth` (containers open
    around it): single-line, ', ' between values, '\\n' + indent before
    the closing bracket of a non-empty array."""
    if not isinstance(tokens, np.ndarray):
        return str(tokens)
    if tokens.ndim == 0:
        return str(tokens.item())
    if tokens.shape[0] == 0:
        return "[]"
    close = "\n" + "    " * depth + "]"
    if tokens.ndim == 1:
        return "[" + ", ".join(tokens.tolist()) + close
    return "[" + ", ".join(_nest(t, depth + 1) for t in tokens) + close


def _object(members: list, depth: int) -> str:
    if not members:
        return "{}"
    inner = "    " * (depth + 1)
    return ("{" + ",".join(f"\n{inner}{_json_string(k)}: {v}"
                           for k, v in members)
            + "\n" + "    " * depth + "}")


def outputs_to_json(outputs: dict, row_format: bool) -> str:
    """{"predictions": ...} (rows) or {"outputs": ...} (columns)."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    tokens = {k: _tokens(np.asarray(v), k) for k, v in outputs.items()}
    names = sorted(tokens)
    if not row_format:
        if len(names) == 1:
            body = _nest(tokens[names[0]], 1)
        else:
            body = _object([(k, _nest(tokens[k], 2)) for k in names], 1)
        return _object([("outputs", body)], 0)
    batch = None
    for k in names:
        if tokens[k].ndim == 0:
            raise errors.invalid_argument(
                f"Tensor name: {k} has no shape information ")
        if batch is not None and tokens[k].shape[0] != batch:
            raise errors.invalid_argument(
                f"Tensor name: {k} has inconsistent batch size: "
                f"{tokens[k].shape[0]} expecting: {batch}")
        batch = tokens[k].shape[0]
    if len(names) == 1:
        rows = [_nest(tokens[names[0]][i], 2) for i in range(batch)]
    else:
        rows = [_object([(k, _nest(tokens[k][i], 3)) for k in names], 2)
                for i in range(batch)]
    body = ("[" + ", ".join(rows) + "\n    ]") if rows else "[]"
    return _object([("predictions", body)], 0)


def error_json(message: str) -> str:
    """MakeJsonFromStatus: {"error": "<message>"} as PrettyWriter writes it."""
    return _object([("error", _json_string(message))], 0)


# ---------------------------------------------------------------------------
# Parsing (ParseJson: rapidjson with kParseIterativeFlag | kParseNanAndInfFlag
# | kParseStopWhenDoneFlag).
# ---------------------------------------------------------------------------

# rapidjson error/en.h GetParseError_En, for the errors Python's json reports.
_RAPIDJSON_ERRORS = (
    ("Expecting value", "Invalid value."),
    ("Expecting ',' delimiter", None),          # depends on the container
    ("Expecting property name enclosed in double quotes",
     "Missing a name for object member."),
    ("Expecting ':' delimiter",
     "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid control character", "Invalid encoding in string."),
)
_WS = " \t\n\r"


def _rapidjson_message(error: json.JSONDecodeError, text: str) -> str:
    for prefix, message in _RAPIDJSON_ERRORS:
        if error.msg.startswith(prefix):
            if message is None:
                opener = _innermost_container(text, error.pos)
                message = ("Missing a comma or '}' after an object member."
                           if opener == "{" else
                           "Missing a comma or ']' after an array element.")
            return message
    return "Unspecific syntax error."


def _innermost_container(text: str, pos: int) -> str:
    stack, in_string, escaped = [], False, False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\n\r]+)
  | (?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
  | (?P<str>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
  | (?P<lit>true|false|null|NaN|-?Infinity)
  | (?P<punct>[\[\]{},:])
""", re.VERBOSE)
_OPEN_RUN = re.compile(r"\[[ \t\n\r\[]*")
_CLOSE_NEXT = re.compile(r"[ \t\n\r]*\]")
_LITERALS = {"true": True, "false": False, "null": None, "NaN": float("nan"),
             "Infinity": float("inf"), "-Infinity": float("-inf")}


def _parse_iterative(text: str, start: int):
    """A JSON value without recursion (rapidjson's kParseIterativeFlag), for
    documents nested deeper than Python's json module goes.  Returns
    (value, end) or raises ValueError(message, offset)."""
    stack = []            # [container, pending key or None]
    pos = start
    value_done = False
    result = None
    expect_key = False
    while True:
        if value_done and not stack:
            return result, pos
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError("Invalid value.", pos)
        kind, tok = m.lastgroup, m.group()
        if kind == "ws":
            pos = m.end()
            continue
        pos = m.end()
        top = stack[-1] if stack else None
        if value_done:
            # after a value: ',' or the container's close
            container = top[0]
            if tok == ",":
                value_done = False
                expect_key = isinstance(container, dict)
                continue
            if tok == "]" and isinstance(container, list) and len(stack) > 1:
                # A run of ']' closing nested lists in one step.
                while True:
                    stack.pop()
                    _attach(stack, container)
                    nxt = _CLOSE_NEXT.match(text, pos)
                    if (nxt is None or not stack
                            or not isinstance(stack[-1][0], list)
                            or len(stack) < 2):
                        break
                    container = stack[-1][0]
                    pos = nxt.end()
                result = stack[-1][0]
                continue
            if (tok == "]" and isinstance(container, list)) or (
                    tok == "}" and isinstance(container, dict)):
                stack.pop()
                result = container
                value_done = True
                if stack:
                    _attach(stack, result)
                continue
            raise ValueError("Missing a comma or '}' after an object member."
                             if isinstance(container, dict) else
                             "Missing a comma or ']' after an array element.",
                             m.start())
        if expect_key:
            if kind != "str" and not (tok == "}" and not top[0]):
                raise ValueError("Missing a name for object member.", m.start())
            if tok == "}":
                stack.pop()
                result, value_done, expect_key = top[0], True, False
                if stack:
                    _attach(stack, result)
                continue
            top[1] = json.loads(tok)
            m2 = _TOKEN.match(text, pos)
            while m2 is not None and m2.lastgroup == "ws":
                pos = m2.end()
                m2 = _TOKEN.match(text, pos)
            if m2 is None or m2.group() != ":":
                raise ValueError(
                    "Missing a colon after a name of object member.", pos)
            pos = m2.end()
            expect_key = False
            continue
        if tok == "[":
            # A run of '[' (a deeply nested document) in one step.
            run = _OPEN_RUN.match(text, m.start())
            for _ in range(run.group().count("[")):
                stack.append([[], None])
            pos = run.end()
            continue
        if tok == "{":
            stack.append([{}, None])
            expect_key = True
            continue
        if tok == "]" and top is not None and isinstance(top[0], list) \
                and not top[0]:
            stack.pop()
            result, value_done = top[0], True
            if stack:
                _attach(stack, result)
            continue
        if kind == "num":
            value = (float(tok) if any(c in tok for c in ".eE")
                     else _big_int(tok))
        elif kind == "str":
            value = json.loads(tok)
        elif kind == "lit":
            value = _LITERALS[tok]
        else:
            raise ValueError("Invalid value.", m.start())
        result, value_done = value, True
        if stack:
            _attach(stack, value)


def _attach(stack, value) -> None:
    container, key = stack[-1]
    if isinstance(container, list):
        container.append(value)
    else:
        container.setdefault(key, value)
        stack[-1][1] = None


def parse_json(body: bytes) -> dict:
    """A request body as a JSON object, or INVALID_ARGUMENT as TF Serving
    words it (util/json_tensor.cc ParseJson).

    As rapidjson with TF Serving's flags: bytes after the first complete value
    are ignored, NaN/Infinity/-Infinity are numbers, nesting has no depth
    limit, UTF-8 is not validated; a repeated key keeps its first value.
    """
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_WS))
    if start == len(text):
        raise errors.invalid_argument(
            f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        doc, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise errors.invalid_argument(
            f"JSON Parse error: {_rapidjson_message(e, text)} at offset: "
            f"{_byte_offset(text, e.pos)}") from e
    except (RecursionError, ValueError):
        # Nested deeper than the C scanner recurses, or a number with more
        # digits than int() converts: the iterative parser.
        gc_was_on = gc.isenabled()
        gc.disable()       # collections over a deep, growing tree are quadratic
        try:
            doc, _ = _parse_iterative(text, start)
        except ValueError as e:
            message, offset = (e.args + (0,))[:2] if len(e.args) > 1 else (
                str(e), 0)
            raise errors.invalid_argument(
                f"JSON Parse error: {message} at offset: "
                f"{_byte_offset(text, offset)}") from e
        finally:
            if gc_was_on:
                gc.enable()
    if not isinstance(doc, dict):
        raise errors.invalid_argument(f"JSON Value: {debug_json(doc)} Is not "
                                      f"object")
    return doc


def _first_key(pairs):
    out = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def _big_int(text: str):
    try:
        return int(text)
    except ValueError:           # more digits than int() converts
        return float(text)


_DECODER = json.JSONDecoder(object_pairs_hook=_first_key, parse_int=_big_int)


def _byte_offset(text: str, pos: int) -> int:
    return len(text[:pos].encode("utf-8", "surrogateescape"))
