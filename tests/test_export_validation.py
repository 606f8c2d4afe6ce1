"""The validator catches broken exports, and names the signature, the check and the values."""

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, node_def_pb2, types_pb2

import export
import tfp_vae
from export import contract, endpoints, graph_ops, saved_contract, warmup

DATA_SHAPE = (8, 8, 1)


def make_vae(prior="normal", latent_dim=2):
    encoder, decoder = tfp_vae.networks.build("mlp", latent_dim, DATA_SHAPE, hidden=(16,))
    return tfp_vae.VAE(encoder, decoder, latent_dim=latent_dim, prior=prior)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    model = make_vae()
    path = export.export_model(model, base, "vae", num_ll_samples=2, session_check=False)
    return model, path


def copy_version(path, tmp_path, name="1"):
    target = tmp_path / "vae" / name
    shutil.copytree(path, target)
    return str(target)


def patch_plan(monkeypatch, signature, wrap):
    """Makes the exporter use ``wrap(original_fn)`` for one signature."""
    original = endpoints.plan

    def patched(*args, **kwargs):
        plan = original(*args, **kwargs)
        fn, spec = plan.functions[signature]
        plan.functions[signature] = (wrap(fn), spec)
        return plan

    monkeypatch.setattr(endpoints, "plan", patched)


def failures(report, check, signature=None):
    return [
        r
        for r in report.failures
        if r.check == check and (signature is None or r.signature == signature)
    ]


# ------------------------------------------------------------------------------ ops


def test_stateful_random_op_fails_validation_and_nothing_is_written(tmp_path, monkeypatch):
    def wrap(fn):
        def decode(z):
            mean = fn(z)["mean"]
            return {"mean": mean + 0.0 * tf.random.normal(tf.shape(mean))}

        return decode

    patch_plan(monkeypatch, "decode", wrap)
    with pytest.raises(export.ValidationError) as info:
        export.export_model(make_vae(), tmp_path, "vae", session_check=False)
    message = str(info.value)
    assert "vae/1 failed" in message and "the version was not written" in message
    assert "FAIL ops" in message and "[decode] stateful random op: RandomStandardNormal" in message
    (problem,) = failures(info.value.report, "ops")
    assert problem.signature == "decode"
    assert sorted(os.listdir(tmp_path / "vae")) == [".export.lock"]


def test_python_callback_and_cpu_only_ops_are_reported(tmp_path, monkeypatch):
    def wrap(fn):
        def generate(seed):
            out = fn(seed)
            x = tf.ensure_shape(tf.py_function(lambda t: t, [out["x"]], tf.float32), out["x"].shape)
            ints = tf.matmul(seed, tf.transpose(seed))  # int32 MatMul: no GPU kernel
            return {"x": x, "z": out["z"] + 0.0 * tf.cast(tf.reduce_sum(ints), tf.float32)}

        return generate

    patch_plan(monkeypatch, "generate", wrap)
    with pytest.raises(export.ValidationError) as info:
        export.export_model(make_vae(), tmp_path, "vae", session_check=False)
    (problem,) = failures(info.value.report, "ops")
    assert problem.signature == "generate"
    assert "python callback op: EagerPyFunc" in problem.detail
    assert "no GPU kernel: MatMul" in problem.detail and "T=int32" in problem.detail
    assert export.list_versions(tmp_path / "vae") == []


def test_seed_rows_that_do_not_drive_sampling_fail(tmp_path, monkeypatch):
    def wrap(fn):
        def generate(seed):
            # Every row sampled with the first row's seed: rows depend on the batch.
            return fn(tf.broadcast_to(seed[:1], tf.shape(seed)))

        return generate

    patch_plan(monkeypatch, "generate", wrap)
    with pytest.raises(export.ValidationError) as info:
        export.export_model(make_vae(), tmp_path, "vae", session_check=False)
    seeds = failures(info.value.report, "seeds", "generate")
    details = " | ".join(r.detail for r in seeds)
    assert (
        "different seed rows give the same outputs (rows 0 and 1, rows 0 and 2, rows 1 and 2)"
        in details
    )
    assert "row with seed (11, 1) alone equals it inside a batch of 4" in details
    assert "max |diff|" in details
    # The live model samples each row from its own seed, so generate also differs from it.
    assert failures(info.value.report, "live_model", "generate")
    assert export.list_versions(tmp_path / "vae") == []


# ------------------------------------------------------- a directory on its own


def test_good_export_validates_without_the_live_model(good, tmp_path):
    _, path = good
    report = export.validate(path, session_check=False)
    assert report.ok
    checks = {r.check for r in report.results}
    assert {"layout", "signatures", "signature_def", "ops", "reload", "seeds", "warmup"} <= checks
    assert "live_model" not in checks
    # The op walk reaches into library functions: the per-row Philox sampler's integer
    # ops sit inside the endpoint's function; the checkpoint saver's ops are not part of
    # any signature. Seeded signatures sample the whole batch at once: no loop.
    assert {"BitwiseXor", "RightShift", "MatMul"} <= set(report.ops["generate"])
    assert "BitwiseXor" in report.ops["log_likelihood"]
    for name in ("generate", "log_likelihood"):
        assert not {"While", "StatelessWhile", "MapDefun"} & set(report.ops[name]), name
    assert not {"SaveV2", "RestoreV2"} & set(report.ops["generate"])


def test_validation_without_manifest_infers_the_contract(good, tmp_path):
    _, path = good
    copy = copy_version(path, tmp_path)
    os.remove(os.path.join(copy, "assets.extra", saved_contract.MANIFEST_FILE))
    report = export.validate(copy, session_check=False)
    assert report.ok
    assert (report.kind, report.decoder_only, report.latent_dim, report.data_shape) == (
        "vae",
        False,
        2,
        DATA_SHAPE,
    )


def test_contract_mismatch_names_signature_and_values(good, tmp_path):
    _, path = good
    copy = copy_version(path, tmp_path)
    manifest_path = os.path.join(copy, "assets.extra", saved_contract.MANIFEST_FILE)
    manifest = json.load(open(manifest_path))
    manifest["latent_dim"] = 5
    json.dump(manifest, open(manifest_path, "w"))
    with pytest.raises(export.ValidationError) as info:
        export.validate(copy, session_check=False)
    decode = failures(info.value.report, "signature_def", "decode")
    assert decode and "input 'z' shape [B, 2], expected [B, 5]" in decode[0].detail
    encode = failures(info.value.report, "signature_def", "encode")
    assert "output 'scale_tril' shape [B, 2, 2], expected [B, 5, 5]" in encode[0].detail


def test_missing_warmup_and_bad_directory_name(good, tmp_path):
    _, path = good
    copy = copy_version(path, tmp_path, name="latest")
    os.remove(warmup.warmup_path(copy))
    report = export.validate(copy, session_check=False, raise_on_failure=False)
    details = [str(r) for r in report.failures]
    assert any("version directory name 'latest' is not an integer" in d for d in details)
    assert any("assets.extra/tf_serving_warmup_requests missing" in d for d in details)


def test_warmup_missing_a_signature_is_reported(good, tmp_path):
    _, path = good
    copy = copy_version(path, tmp_path)
    spec = contract.signature_spec("decode", "vae", 2, DATA_SHAPE)
    warmup.write_warmup_requests(copy, "vae", {"decode": contract.example_inputs(spec, 2)})
    report = export.validate(copy, session_check=False, raise_on_failure=False)
    (problem,) = failures(report, "warmup")
    assert (
        "no record for ['encode', 'generate', 'log_likelihood', 'reconstruct', 'serving_default']"
        in problem.detail
    )


def test_live_model_mismatch_is_reported(good):
    _, path = good
    other = make_vae()  # same architecture, other weights
    report = export.validate(path, other, session_check=False, raise_on_failure=False)
    bad = {r.signature for r in failures(report, "live_model")}
    assert {
        "decode",
        "serving_default",
        "generate",
        "encode",
        "reconstruct",
        "log_likelihood",
    } == bad
    (detail,) = [r.detail for r in failures(report, "live_model", "decode")][:1]
    assert "mean differs: max |diff| =" in detail and "first at index" in detail


def test_decoder_only_export_carrying_encoder_weights_is_caught(tmp_path, monkeypatch):
    model = make_vae("vamp")
    original = endpoints.plan

    def leaky(*args, **kwargs):
        plan = original(*args, **kwargs)
        plan.track.append(model.encoder)  # the encoder's weights ride along
        return plan

    monkeypatch.setattr(endpoints, "plan", leaky)
    with pytest.raises(export.ValidationError) as info:
        export.export_model(model, tmp_path, "vae", decoder_only=True, session_check=False)
    (problem,) = failures(info.value.report, "variables")
    assert "decoder-only export saves encoder variables" in problem.detail
    assert all(v.path in problem.detail for v in model.encoder.variables)


# --------------------------------------------------------------------- graph_ops


def _node(op, **types):
    node = node_def_pb2.NodeDef(name="n", op=op)
    for key, dtype in types.items():
        node.attr[key].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
    return node


@pytest.mark.parametrize(
    "node,rule",
    [
        (_node("MatMul", T=types_pb2.DT_FLOAT), None),
        (
            _node("StatelessRandomNormalV2", dtype=types_pb2.DT_FLOAT, Tshape=types_pb2.DT_INT32),
            None,
        ),
        (_node("ReadVariableOp", dtype=types_pb2.DT_FLOAT), None),  # a DEFAULT-device kernel
        (_node("MatMul", T=types_pb2.DT_INT32), graph_ops.NO_GPU_KERNEL),
        (_node("StringJoin"), graph_ops.NO_GPU_KERNEL),
        (
            _node("RandomStandardNormal", dtype=types_pb2.DT_FLOAT, T=types_pb2.DT_INT32),
            graph_ops.STATEFUL_RANDOM,
        ),
        (
            _node("RandomUniform", dtype=types_pb2.DT_FLOAT, T=types_pb2.DT_INT32),
            graph_ops.STATEFUL_RANDOM,
        ),
        (_node("EagerPyFunc"), graph_ops.PY_FUNC),
        (_node("PyFunc"), graph_ops.PY_FUNC),
        (_node("MyCustomOpThatDoesNotExist"), graph_ops.UNKNOWN),
    ],
)
def test_op_rules(node, rule):
    verdict = graph_ops.judge(node, library_names=set())
    assert (verdict[0] if verdict else None) == rule


def test_library_function_calls_are_not_ops():
    node = _node("__inference_decode_123")
    assert graph_ops.judge(node, library_names={"__inference_decode_123"}) is None
    assert graph_ops.judge(node, library_names=set())[0] == graph_ops.UNKNOWN


def test_validate_rejects_bad_batch_sizes(good):
    _, path = good
    with pytest.raises(ValueError, match=r"two or more distinct positive sizes, got \(3, 3\)"):
        export.validate(path, batch_sizes=(3, 3))
