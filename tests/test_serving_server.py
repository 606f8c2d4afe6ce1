"""The local server against the TF Serving protocol, through real sockets.

One server runs in this process for the module, serving from a models.config:

* ``vae``: versions 1 and 2 (different decoders), policy specific {1, 2},
  labels stable -> 1 and canary -> 2;
* ``live``: latest-version policy over a base path the tests add versions to.
"""

import json
import os
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

import serving_fixtures as fx

from serving.client import Client, parse_predict_response
from serving.errors import ServingError
from serving.rest_client import RestClient
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc,
                                     regression_pb2)

pytestmark = pytest.mark.timeout(120)

POLL = 0.2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    versions = fx.shared_versions()
    vae = root / "vae"
    live = root / "live"
    for v in (1, 2):
        fx.copy_version(versions[v], str(vae), v)
    fx.copy_version(versions[1], str(live), 1)
    config = root / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "vae"
    base_path: "{vae}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "live"
    base_path: "{live}"
    model_platform: "tensorflow"
  }}
}}
""")
    rest_port = fx.free_port()
    server = fx.start_server_in_thread([
        "--port", "0", "--rest_api_port", str(rest_port),
        "--model_config_file", str(config),
        # Labels at start-up: TF Serving refuses them without this flag, as
        # no version is available yet when the config is first applied.
        "--allow_version_labels_for_unavailable_models",
        "--enable_grpc_healthcheck_service",
        # A broken version fails at once (TF Serving's default: 5 retries,
        # one minute apart).
        "--max_num_load_retries=0",
        "--file_system_poll_wait_seconds", str(POLL)])
    channel = grpc.insecure_channel(server.target)
    yield {
        "server": server, "target": server.target,
        "rest": f"127.0.0.1:{server.rest_port}", "versions": versions,
        "live": str(live),
        "predict_stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "model_stub": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    channel.close()
    server.stop(grace=5)


@pytest.fixture(scope="module")
def client(env):
    with Client(env["target"], "vae", timeout=30) as c:
        yield c


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Signatures, versions, metadata, status.
# ---------------------------------------------------------------------------

def test_every_signature_through_client_matches_in_process(env, client):
    inputs = fx.example_inputs(5, seed=11)
    latest = env["versions"][2]
    x, z = client.generate(inputs["generate"]["seed"])
    ref = fx.reference_outputs(latest, "generate", inputs["generate"])
    np.testing.assert_array_equal(x, ref["x"])
    np.testing.assert_array_equal(z, ref["z"])
    assert x.dtype == np.float32 and x.shape == (5, *fx.DATA_SHAPE)

    _close(client.decode(inputs["decode"]["z"]),
           fx.reference_outputs(latest, "decode", inputs["decode"])["mean"])
    loc, scale_tril = client.encode(inputs["encode"]["x"])
    ref = fx.reference_outputs(latest, "encode", inputs["encode"])
    _close(loc, ref["loc"])
    _close(scale_tril, ref["scale_tril"])
    assert scale_tril.shape == (5, fx.LATENT_DIM, fx.LATENT_DIM)
    assert np.all(np.triu(scale_tril[0], 1) == 0)
    _close(client.reconstruct(inputs["reconstruct"]["x"]),
           fx.reference_outputs(latest, "reconstruct",
                                inputs["reconstruct"])["mean"])
    ll, elbo = client.log_likelihood(inputs["log_likelihood"]["x"],
                                     inputs["log_likelihood"]["seed"])
    ref = fx.reference_outputs(latest, "log_likelihood", inputs["log_likelihood"])
    _close(ll, ref["log_likelihood"])
    _close(elbo, ref["elbo"])
    # The importance-sampled bound is at least the mean of its log weights.
    assert np.all(ll >= elbo - 1e-4)
    # serving_default is decode.
    _close(client.predict("serving_default", inputs["decode"])["mean"],
           client.decode(inputs["decode"]["z"]))


def test_same_seed_row_same_sample_in_any_batch(client):
    # z is bit-identical in any batch; the decoded x agrees within float32 rounding
    # (matrix kernels may round differently for another batch size on some CPUs).
    rows = fx.example_inputs(6, seed=3)["generate"]["seed"]
    x_all, z_all = client.generate(rows)
    x_part, z_part = client.generate(rows[2:5])
    np.testing.assert_array_equal(z_all[2:5], z_part)
    np.testing.assert_allclose(x_all[2:5], x_part, rtol=0, atol=1e-6)
    assert not np.allclose(x_all[0], x_all[1])


@pytest.mark.parametrize("how,expected_version", [
    ({"version": 1}, 1), ({"version": 2}, 2),
    ({"version_label": "stable"}, 1), ({"version_label": "canary"}, 2),
    ({}, 2),
])
def test_version_by_number_label_or_latest(env, how, expected_version):
    z = fx.example_inputs(3)["decode"]["z"]
    with Client(env["target"], "vae", **how) as c:
        result = c.call("decode", {"z": z})
    assert result.model_version == expected_version
    assert result.signature_name == "decode"
    ref = fx.reference_outputs(env["versions"][expected_version], "decode",
                               {"z": z})
    _close(result.outputs["mean"], ref["mean"])
    other = fx.reference_outputs(env["versions"][3 - expected_version],
                                 "decode", {"z": z})
    assert not np.allclose(result.outputs["mean"], other["mean"])


def test_metadata_is_the_saved_model_signature_map(env, client):
    meta = client.metadata()
    assert (meta.name, meta.version) == ("vae", 2)
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(env["versions"][2], "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    expected = dict(saved.meta_graphs[0].signature_def)
    assert meta.signature_defs == expected
    for name in fx.SIGNATURES:
        assert name in meta.signatures
    seed = meta.signatures["generate"].inputs["seed"]
    assert seed.dtype == np.int32 and seed.shape == (None, 2)
    ll = meta.signatures["log_likelihood"]
    assert sorted(ll.inputs) == ["seed", "x"]
    assert sorted(ll.outputs) == ["elbo", "log_likelihood"]
    assert ll.outputs["elbo"].shape == (None,)

    # Raw response: the map is packed in an Any as a SignatureDefMap.
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"])
    request.model_spec.name = "vae"
    request.model_spec.version.value = 1
    response = env["predict_stub"].GetModelMetadata(request, timeout=10)
    any_msg = response.metadata["signature_def"]
    assert any_msg.type_url == ("type.googleapis.com/"
                                "tensorflow.serving.SignatureDefMap")
    assert response.model_spec.version.value == 1


def test_status_lists_versions(env, client):
    statuses = client.status()
    assert [(s.version, s.state, s.error_code) for s in statuses] == [
        (2, "AVAILABLE", "OK"), (1, "AVAILABLE", "OK")]
    with Client(env["target"], "vae", version=1) as c:
        assert [(s.version, s.state) for s in c.status()] == [(1, "AVAILABLE")]


def test_health_service(client):
    assert client.health() == "SERVING"
    assert client.health("tensorflow.serving.PredictionService") == "SERVING"


def test_response_in_tensor_content_and_val_fields_decode(env):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vae"
    request.model_spec.signature_name = "decode"
    # A request in float_val (as other clients send it) is accepted.
    z = np.array([[0.5, -1.0]], np.float32)
    tensor = request.inputs["z"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=2)
    tensor.float_val.extend(z.reshape(-1).tolist())
    response = env["predict_stub"].Predict(request, timeout=10)
    out = response.outputs["mean"]
    # TF Serving's default encoding: typed float_val, no tensor_content
    # (predict_util.cc PostProcessPredictionResult, kAsProtoField).
    assert out.float_val and not out.tensor_content
    assert len(out.float_val) == np.prod([d.size for d in out.tensor_shape.dim])
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "decode"
    mean = parse_predict_response(response)["mean"]
    # The client decodes tensor_content responses too
    # (--enable_serialization_as_tensor_content).
    as_content = predict_pb2.PredictResponse()
    as_content.outputs["mean"].dtype = types_pb2.DT_FLOAT
    as_content.outputs["mean"].tensor_shape.CopyFrom(out.tensor_shape)
    as_content.outputs["mean"].tensor_content = mean.astype("<f4").tobytes()
    np.testing.assert_array_equal(parse_predict_response(as_content)["mean"],
                                  mean)
    _close(mean, fx.reference_outputs(env["versions"][2], "decode",
                                      {"z": z})["mean"])


def test_output_filter(client):
    inputs = fx.example_inputs(2)["encode"]
    out = client.predict("encode", inputs, output_filter=["scale_tril"])
    assert list(out) == ["scale_tril"]


# ---------------------------------------------------------------------------
# The status-code table of SPEC.md.
# ---------------------------------------------------------------------------

def _predict_request(name="vae", signature="decode", inputs=None, **spec):
    inputs = fx.example_inputs(2)["decode"] if inputs is None else inputs
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    for k, v in inputs.items():
        request.inputs[k].CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT if v.dtype == np.float32 else
            types_pb2.DT_INT32 if v.dtype == np.int32 else types_pb2.DT_DOUBLE,
            tensor_shape={"dim": [{"size": s} for s in v.shape]},
            tensor_content=v.tobytes()))
    return request


def _filtered(request, *aliases):
    request.output_filter.extend(aliases)
    return request


def _metadata_request(name="vae", fields=("signature_def",)):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=list(fields))
    request.model_spec.name = name
    return request


def _status_request(name="vae", version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


Z = fx.example_inputs(2)["decode"]["z"]
CODE = grpc.StatusCode
TABLE = [
    # (row, stub, method, request, codes, message fragment)
    ("no model name", "predict", "Predict", lambda: _predict_request(name=""),
     {CODE.INVALID_ARGUMENT}, "ModelSpec has no name specified"),
    ("no model name (metadata)", "predict", "GetModelMetadata",
     lambda: _metadata_request(name=""), {CODE.INVALID_ARGUMENT},
     "no name"),
    ("no model spec", "predict", "Predict", lambda: predict_pb2.PredictRequest(),
     {CODE.INVALID_ARGUMENT}, "Missing ModelSpec"),
    ("unknown model", "predict", "Predict",
     lambda: _predict_request(name="nope"), {CODE.NOT_FOUND},
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "predict", "Predict",
     lambda: _predict_request(version=9), {CODE.NOT_FOUND},
     "Servable not found for request: Specific(vae, 9)"),
    ("unknown model (metadata)", "predict", "GetModelMetadata",
     lambda: _metadata_request(name="nope"), {CODE.NOT_FOUND}, "nope"),
    ("unknown signature", "predict", "Predict",
     lambda: _predict_request(signature="nope"), {CODE.FAILED_PRECONDITION},
     'Serving signature key "nope" not found.'),
    ("missing input", "predict", "Predict",
     lambda: _predict_request(signature="log_likelihood",
                              inputs={"x": fx.example_inputs(2)["encode"]["x"]}),
     {CODE.INVALID_ARGUMENT}, "Missing but required: {seed}"),
    ("extra input", "predict", "Predict",
     lambda: _predict_request(inputs={"z": Z, "w": Z}),
     {CODE.INVALID_ARGUMENT}, "Sent extra: {w}"),
    ("misnamed input", "predict", "Predict",
     lambda: _predict_request(inputs={"w": Z}), {CODE.INVALID_ARGUMENT},
     "Signature input alias: z"),
    ("wrong dtype", "predict", "Predict",
     lambda: _predict_request(inputs={"z": Z.astype(np.float64)}),
     {CODE.INVALID_ARGUMENT}, "to be float but double is provided"),
    ("wrong dtype (seed)", "predict", "Predict",
     lambda: _predict_request(signature="generate",
                              inputs={"seed": Z}),
     {CODE.INVALID_ARGUMENT}, "to be int32 but float is provided"),
    ("wrong shape", "predict", "Predict",
     lambda: _predict_request(inputs={"z": np.zeros((2, 3), np.float32)}),
     {CODE.INVALID_ARGUMENT}, "[2, 3]"),
    ("corrupt tensor", "predict", "Predict",
     lambda: _corrupt_request(),
     {CODE.INVALID_ARGUMENT}, "tensor parsing error: z"),
    ("bad output_filter", "predict", "Predict",
     lambda: _filtered(_predict_request(), "nope"), {CODE.INVALID_ARGUMENT},
     "output tensor alias not found in signature: nope"),
    ("duplicate output_filter", "predict", "Predict",
     lambda: _filtered(_predict_request(), "mean", "mean"),
     {CODE.INVALID_ARGUMENT}, "duplicate output tensor alias: mean"),
    ("unknown version label", "predict", "Predict",
     lambda: _predict_request(label="nope"), {CODE.INVALID_ARGUMENT},
     "Unrecognized servable version label: nope"),
    ("status of unknown model", "model", "GetModelStatus",
     lambda: _status_request(name="nope"), {CODE.NOT_FOUND},
     "Could not find any versions of model nope"),
    ("status of unknown version", "model", "GetModelStatus",
     lambda: _status_request(version=9), {CODE.NOT_FOUND},
     "Could not find version 9 of model vae"),
    ("metadata field", "predict", "GetModelMetadata",
     lambda: _metadata_request(fields=("signature_def", "other")),
     {CODE.INVALID_ARGUMENT}, "Metadata field other is not supported"),
    ("no metadata field", "predict", "GetModelMetadata",
     lambda: _metadata_request(fields=()), {CODE.INVALID_ARGUMENT},
     "at least one metadata_field"),
    ("classify", "predict", "Classify",
     lambda: classification_pb2.ClassificationRequest(
         model_spec={"name": "vae"}),
     {CODE.INVALID_ARGUMENT, CODE.UNIMPLEMENTED},
     "No classification inputs found"),
    ("regress", "predict", "Regress",
     lambda: regression_pb2.RegressionRequest(
         model_spec={"name": "vae", "signature_name": "encode"}),
     {CODE.INVALID_ARGUMENT, CODE.UNIMPLEMENTED}, "Expected one output Tensor."),
    ("multi inference", "predict", "MultiInference",
     lambda: inference_pb2.MultiInferenceRequest(tasks=[{
         "model_spec": {"name": "vae"},
         "method_name": "tensorflow/serving/classify"}]),
     {CODE.INVALID_ARGUMENT, CODE.UNIMPLEMENTED},
     "No classification inputs found"),
    ("multi inference, predict method", "predict", "MultiInference",
     lambda: inference_pb2.MultiInferenceRequest(tasks=[{
         "model_spec": {"name": "vae"},
         "method_name": "tensorflow/serving/predict"}]),
     {CODE.INVALID_ARGUMENT, CODE.UNIMPLEMENTED},
     "Unsupported signature method_name"),
]


def _corrupt_request():
    request = _predict_request()
    request.inputs["z"].tensor_content = b"\x00" * 7     # not 2 x 2 floats
    return request


@pytest.mark.parametrize("row,stub,method,make,codes,fragment", TABLE,
                         ids=[r[0] for r in TABLE])
def test_status_code_table(env, row, stub, method, make, codes, fragment):
    rpc = getattr(env[f"{stub}_stub"], method)
    with pytest.raises(grpc.RpcError) as info:
        rpc(make(), timeout=10)
    assert info.value.code() in codes, (row, info.value.code(),
                                        info.value.details())
    assert fragment in info.value.details()


def test_server_survives_bad_requests(env, client):
    for _, stub, method, make, _, _ in TABLE:
        with pytest.raises(grpc.RpcError):
            getattr(env[f"{stub}_stub"], method)(make(), timeout=10)
    assert client.health() == "SERVING"
    assert client.decode(Z).shape == (2, *fx.DATA_SHAPE)


def test_client_raises_typed_errors(env):
    with Client(env["target"], "vae", version=9) as c:
        with pytest.raises(ServingError) as info:
            c.decode(Z)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "Specific(vae, 9)" in info.value.message
    with pytest.raises(ValueError, match="int32"):
        Client(env["target"], "vae").generate(np.array([[0, 2**40]]))


# ---------------------------------------------------------------------------
# REST.
# ---------------------------------------------------------------------------

def _http(env, method, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes)
                                      else json.dumps(body).encode())
    request = urllib.request.Request(f"http://{env['rest']}{path}", data=data,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_rest_predict_rows_and_columns(env, client):
    inputs = fx.example_inputs(3, seed=5)
    z = inputs["decode"]["z"]
    expected = client.decode(z)
    status, text = _http(env, "POST", "/v1/models/vae:predict",
                         {"instances": z.tolist()})
    assert status == 200
    np.testing.assert_array_equal(np.array(json.loads(text)["predictions"],
                                           np.float32), expected)
    status, text = _http(env, "POST", "/v1/models/vae/versions/1:predict",
                         {"signature_name": "decode", "inputs": {"z": z.tolist()}})
    assert status == 200
    with Client(env["target"], "vae", version=1) as c1:
        np.testing.assert_array_equal(
            np.array(json.loads(text)["outputs"], np.float32), c1.decode(z))
    # Several outputs: rows are objects, columns an object of tensors.
    x = inputs["encode"]["x"]
    loc, scale_tril = client.encode(x)
    status, text = _http(env, "POST", "/v1/models/vae/labels/canary:predict", {
        "signature_name": "encode",
        "instances": [{"x": row.tolist()} for row in x]})
    assert status == 200
    rows = json.loads(text)["predictions"]
    assert sorted(rows[0]) == ["loc", "scale_tril"]
    np.testing.assert_array_equal(np.array([r["loc"] for r in rows], np.float32),
                                  loc)
    status, text = _http(env, "POST", "/v1/models/vae:predict", {
        "signature_name": "log_likelihood",
        "inputs": {"x": x.tolist(),
                   "seed": inputs["generate"]["seed"].tolist()}})
    assert status == 200
    outputs = json.loads(text)["outputs"]
    ll, elbo = client.log_likelihood(x, inputs["generate"]["seed"])
    np.testing.assert_array_equal(np.array(outputs["elbo"], np.float32), elbo)


def test_rest_status_and_metadata(env):
    status, text = _http(env, "GET", "/v1/models/vae")
    assert status == 200
    doc = json.loads(text)
    assert doc["model_version_status"][0] == {
        "version": "2", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}
    status, text = _http(env, "GET", "/v1/models/vae/versions/1/metadata")
    assert status == 200
    doc = json.loads(text)
    assert doc["model_spec"]["version"] == "1"
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert sigs["generate"]["inputs"]["seed"]["dtype"] == "DT_INT32"
    assert sorted(sigs["encode"]["outputs"]) == ["loc", "scale_tril"]


@pytest.mark.parametrize("method,path,body,http_status,fragment", [
    ("POST", "/v1/models/nope:predict", {"instances": [[0, 0]]}, 404,
     "Servable not found"),
    ("POST", "/v1/models/vae/versions/9:predict", {"instances": [[0, 0]]}, 404,
     "Specific(vae, 9)"),
    ("POST", "/v1/models/vae/labels/nope:predict", {"instances": [[0, 0]]}, 400,
     "Unrecognized servable version label"),
    ("POST", "/v1/models/vae:predict", {"signature_name": "nope",
                                        "instances": [[0, 0]]}, 400,
     "not found in signature def"),
    ("POST", "/v1/models/vae:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/vae:predict", {"signature_name": "decode"}, 400,
     "Missing 'inputs' or 'instances' key"),
    # Ragged rows: json_tensor.cc compares element sizes first
    # (json_tensor_test.cc SingleUnnamedTensorErrors).
    ("POST", "/v1/models/vae:predict", {"instances": [[0, 0], [0]]}, 400,
     "Expecting tensor size: 2 but got: 1"),
    ("POST", "/v1/models/vae:predict", {"instances": [[0, 0], [[0, 0]]]}, 400,
     "Expecting shape [2] but got: [1,2]"),
    ("POST", "/v1/models/vae:predict", {"instances": [[0, 0, 0]]}, 400,
     "not compatible"),
    ("POST", "/v1/models/vae:predict", {"signature_name": "generate",
                                        "instances": [[0.5, 1]]}, 400,
     "is not of expected type: int32"),
    ("POST", "/v1/models/vae:predict", {"signature_name": "log_likelihood",
                                        "instances": [[0, 0]]}, 400,
     "expecting list of objects"),
    ("POST", "/v1/models/vae:classify", {"examples": []}, 400,
     "No classification inputs found"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/vae/versions/9/metadata", None, 404, "Specific(vae, 9)"),
    ("POST", "/v1/nothing", {}, 400, "Malformed request"),
])
def test_rest_errors(env, method, path, body, http_status, fragment):
    status, text = _http(env, method, path, body)
    assert status == http_status, text
    assert fragment in json.loads(text)["error"]


def test_rest_client_matches_grpc(env, client):
    inputs = fx.example_inputs(4, seed=9)
    with RestClient(env["rest"], "vae", timeout=30) as rest:
        x, z = rest.generate(inputs["generate"]["seed"])
        gx, gz = client.generate(inputs["generate"]["seed"])
        np.testing.assert_array_equal(x, gx)
        assert x.dtype == np.float32
        loc, scale_tril = rest.encode(inputs["encode"]["x"])
        np.testing.assert_array_equal(loc, client.encode(inputs["encode"]["x"])[0])
        rest_meta, grpc_meta = rest.metadata(), client.metadata()
        assert rest_meta.signatures == grpc_meta.signatures
        # REST carries the SignatureDefs as JSON (it imports no protos): the same maps.
        assert rest_meta.signature_defs == {
            name: json_format.MessageToDict(
                proto, always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True)
            for name, proto in grpc_meta.signature_defs.items()}
        assert [s.state for s in rest.status()] == ["AVAILABLE", "AVAILABLE"]
    with RestClient(env["rest"], "vae", version=9) as rest:
        with pytest.raises(ServingError) as info:
            rest.status()
    assert info.value.code == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------------
# Versions appearing while serving.
# ---------------------------------------------------------------------------

def _states(client):
    try:
        return {s.version: (s.state, s.error_code) for s in client.status()}
    except ServingError:
        return {}


def test_new_version_then_broken_version(env):
    server = env["server"]
    z = fx.example_inputs(2)["decode"]["z"]
    ref = {v: fx.reference_outputs(env["versions"][v], "decode", {"z": z})["mean"]
           for v in (1, 2)}
    with Client(env["target"], "live", timeout=30) as live:
        _close(live.decode(z), ref[1])
        stop = threading.Event()
        failures = []

        def keep_asking():      # requests keep succeeding during the switch
            while not stop.is_set():
                try:
                    live.decode(z)
                except ServingError as e:
                    failures.append(e)
                time.sleep(0.01)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            fx.copy_version(env["versions"][2], env["live"], 2)
            fx.wait_for(lambda: _states(live).get(1, ("",))[0] == "END",
                        60, message="version 2 to replace version 1")
            assert _states(live)[2] == ("AVAILABLE", "OK")
            _close(live.decode(z), ref[2])
            loaded = [s for s in server.manager.available_servables()
                      if s.name == "live"]
            assert [s.version for s in loaded] == [2]
            assert loaded[0].warmup_records == len(fx.SIGNATURES)

            fx.write_broken_version(env["live"], 3)
            fx.wait_for(lambda: _states(live).get(3, ("",))[0] == "END",
                        60, message="version 3 to fail")
        finally:
            stop.set()
            asker.join()
        assert not failures, failures[:3]
        states = _states(live)
        assert states[3][1] != "OK"
        statuses = {s.version: s for s in live.status()}
        assert statuses[3].error_message
        assert states[2] == ("AVAILABLE", "OK")
        _close(live.decode(z), ref[2])       # latest is still version 2
        with Client(env["target"], "live", version=3) as v3:
            with pytest.raises(ServingError) as info:
                v3.decode(z)
        assert info.value.code == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------------
# Load.
# ---------------------------------------------------------------------------

def test_eight_clients_two_hundred_requests_each(env):
    inputs = fx.example_inputs(4, seed=21)
    z = inputs["decode"]["z"]
    expected = fx.reference_outputs(env["versions"][2], "decode", {"z": z})["mean"]
    expected_x = fx.reference_outputs(env["versions"][2], "generate",
                                      inputs["generate"])["x"]

    def one_client(i):
        bad = 0
        with Client(env["target"], "vae", timeout=60) as c:
            for j in range(200):
                if j % 4 == 0:
                    x, _ = c.generate(inputs["generate"]["seed"])
                    bad += not np.array_equal(x, expected_x)
                else:
                    bad += not np.allclose(c.decode(z), expected, atol=1e-6)
        return bad

    results = fx.run_in_threads(one_client, 8)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors[:2]
    assert [r[1] for r in results] == [0] * 8
