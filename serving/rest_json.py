"""TF Serving's REST JSON, both ways: request bodies to arrays, outputs to JSON text.

The rules of ``tensorflow_serving/util/json_tensor.cc``:

* a request is ``{"signature_name", "instances": [...]}`` (row format: one
  value or object per example, stacked on dimension 0) or ``{"inputs": ...}``
  (columnar: one value, or an object of named tensors; keys the signature does
  not name are ignored) -- never both (`request_to_arrays`);
* values take the signature's dtype; integers must fit it, floats are refused
  for integer inputs, strings are UTF-8 or ``{"b64": "..."}`` (`json_to_array`);
* answers are ``{"predictions": [...]}`` to row requests and ``{"outputs": ...}``
  to columnar ones, a single output unnamed (`outputs_to_json`); floats are
  written with the shortest text that reads back to the same float32, NaN and
  infinities as ``NaN``/``Infinity``/``-Infinity``, byte strings of outputs
  named ``*_bytes`` (or not UTF-8) as ``{"b64": "..."}``.

Every refusal is an INVALID_ARGUMENT `ServingError` with TF Serving's wording.
"""

from __future__ import annotations

import base64
import json

import numpy as np
from tensorflow.core.framework import types_pb2

from serving import errors, tensors


def debug_json(value) -> str:
    """A JSON value, cut at 200 characters, for error messages."""
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _decode_strings(value):
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict):
        if list(value) != ["b64"] or not isinstance(value["b64"], str):
            raise errors.invalid_argument(
                f"JSON Value: {debug_json(value)} not formatted correctly for "
                f"base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as e:
            raise errors.invalid_argument("Unable to base64 decode") from e
    if isinstance(value, str):
        return value.encode("utf-8")
    raise errors.invalid_argument(
        f"JSON Value: {debug_json(value)} Type: {type(value).__name__} is not "
        f"of expected type: string")


def json_to_array(value, dtype_enum: int) -> np.ndarray:
    """A JSON value as an array of the signature's dtype."""
    if dtype_enum == types_pb2.DT_STRING:
        nested = _decode_strings(value)
        try:
            shape = np.array(nested, dtype=object).shape
            flat = np.empty(int(np.prod(shape)), dtype=object)
            flat[:] = np.array(nested, dtype=object).reshape(-1)
        except ValueError as e:
            raise errors.invalid_argument(
                f"JSON Value: {debug_json(value)} is not a dense list: {e}") from e
        return flat.reshape(shape)
    try:
        array = np.array(value)
    except (ValueError, OverflowError) as e:
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(value)} is not a dense tensor: {e}") from e
    dtype = tensors.numpy_dtype(dtype_enum)
    kind = array.dtype.kind
    name = tensors.dtype_name(dtype_enum)
    ok = {"f": "iuf", "c": "iufc", "i": "iu", "u": "iu", "b": "b"}
    if array.dtype == object or kind not in ok.get(dtype.kind, ""):
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(value)} is not of expected type: {name}")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise errors.invalid_argument(
                f"JSON Value: {debug_json(value)} is out of range for {name}")
    return array.astype(dtype)


def _float_tokens(array: np.ndarray) -> np.ndarray:
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    tokens = array.astype(str)
    if not np.all(np.isfinite(array)):
        tokens = tokens.astype(object)
        tokens[np.isnan(array)] = "NaN"
        tokens[np.isposinf(array)] = "Infinity"
        tokens[np.isneginf(array)] = "-Infinity"
    return tokens


def _tokens(array: np.ndarray, alias: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f" or array.dtype.name == "bfloat16":
        return _float_tokens(array)
    if kind == "b":
        return np.where(array, "true", "false")
    if kind in "iu":
        return array.astype(str)
    out = np.empty(array.shape, dtype=object)
    for index, item in np.ndenumerate(array):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if alias.endswith("_bytes"):
            out[index] = json.dumps({"b64": base64.b64encode(data).decode()})
        else:
            try:
                out[index] = json.dumps(data.decode("utf-8"))
            except UnicodeDecodeError:
                out[index] = json.dumps(
                    {"b64": base64.b64encode(data).decode()})
    return out


def _nest(tokens: np.ndarray) -> str:
    if tokens.ndim == 0:
        return str(tokens.item())
    if tokens.ndim == 1:
        return "[" + ",".join(map(str, tokens.tolist())) + "]"
    return "[" + ",".join(_nest(t) for t in tokens) + "]"


def outputs_to_json(outputs: dict, row_format: bool) -> str:
    """{"predictions": ...} (rows) or {"outputs": ...} (columns)."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    tokens = {k: _tokens(v, k) for k, v in outputs.items()}
    names = sorted(tokens)
    if not row_format:
        if len(names) == 1:
            body = _nest(tokens[names[0]])
        else:
            body = "{" + ",".join(f"{json.dumps(k)}:{_nest(tokens[k])}"
                                  for k in names) + "}"
        return '{"outputs":' + body + "}"
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
    rows = []
    for i in range(batch):
        if len(names) == 1:
            rows.append(_nest(tokens[names[0]][i]))
        else:
            rows.append("{" + ",".join(f"{json.dumps(k)}:{_nest(tokens[k][i])}"
                                       for k in names) + "}")
    return '{"predictions":[' + ",".join(rows) + "]}"


def _is_b64(value) -> bool:
    return isinstance(value, dict) and list(value) == ["b64"]


def request_to_arrays(doc: dict, input_infos) -> tuple:
    """Predict JSON body -> ({alias: array}, row_format)."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {debug_json(doc)} Not formatted correctly expecting "
            f"only one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
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
        for i, item in enumerate(instances):
            if objects:
                if not isinstance(item, dict) or _is_b64(item):
                    raise errors.invalid_argument(
                        f"Expecting object but got list at item {i} of input "
                        f"list")
                if sorted(item) != names:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} of 'instances' list. "
                        f"JSON object: {debug_json(item)} keys must be equal "
                        f"to: {','.join(names)}")
                values = item
            else:
                if isinstance(item, dict) and not _is_b64(item):
                    raise errors.invalid_argument(
                        f"Expecting value/list but got object at item {i} of "
                        f"input list")
                values = {names[0]: item}
            for k in names:
                try:
                    columns[k].append(json_to_array(values[k],
                                                    input_infos[k].dtype))
                except errors.ServingError as e:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} key: {k} of "
                        f"'instances' list. Error: {e}") from e
                first = columns[k][0]
                if columns[k][-1].shape != first.shape:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} key: {k} of "
                        f"'instances' list. Error: Expecting shape "
                        f"{list(first.shape)} but got: "
                        f"{list(columns[k][-1].shape)}")
        return {k: np.stack(v) for k, v in columns.items()}, True
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


def parse_json(body: bytes) -> dict:
    """A request body as a JSON object, or INVALID_ARGUMENT as TF Serving words it."""
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.invalid_argument(f"JSON Parse error: {e}") from e
    if not isinstance(doc, dict):
        raise errors.invalid_argument(f"JSON Value: {debug_json(doc)} Is not "
                                      f"object")
    return doc
