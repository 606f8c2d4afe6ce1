"""The GPU serving Dockerfile, checked without a Docker engine.

The image cannot be built here, so we parse the Dockerfile and check what can be
checked: the serving image is the tensorflow/serving GPU image of the installed
TensorFlow version; the export stage's `tfp-vae export` command parses with our own
argument parser; the model directory it writes is the one copied into the serving
image, and the one models.config names; the server listens on 8500 (gRPC) and 8501
(REST); and every flag given to tensorflow_model_server is one it knows.
"""

import argparse
import json
import os
import posixpath
import re
import shlex

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf

import export
import tfp_vae
from export import server_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every flag tensorflow_model_server accepts: the tensorflow::Flag(...) list in
# tensorflow/serving tensorflow_serving/model_servers/main.cc (master, July 2026,
# commit 9d981c5c), which the 2.21 image's binary is built from.
MODEL_SERVER_FLAGS = frozenset(
    {
        "port",
        "grpc_socket_path",
        "rest_api_port",
        "rest_api_num_threads",
        "rest_api_timeout_in_ms",
        "rest_api_enable_cors_support",
        "enable_batching",
        "allow_version_labels_for_unavailable_models",
        "batching_parameters_file",
        "enable_per_model_batching_parameters",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "model_name",
        "model_base_path",
        "num_load_threads",
        "num_unload_threads",
        "max_num_load_retries",
        "load_retry_interval_micros",
        "file_system_poll_wait_seconds",
        "flush_filesystem_caches",
        "tensorflow_session_parallelism",
        "tensorflow_session_config_file",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
        "use_alts_credentials",
        "ssl_config_file",
        "platform_config_file",
        "per_process_gpu_memory_fraction",
        "saved_model_tags",
        "grpc_channel_arguments",
        "grpc_max_threads",
        "enable_model_warmup",
        "num_request_iterations_for_warmup",
        "version",
        "monitoring_config_file",
        "remove_unused_fields_from_bundle_metagraph",
        "prefer_tflite_model",
        "num_tflite_pools",
        "num_tflite_interpreters_per_pool",
        "enable_signature_method_name_check",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
        "enable_profiler",
        "thread_pool_factory_config_file",
        "mixed_precision",
        "skip_initialize_tpu",
        "enable_grpc_healthcheck_service",
        "enable_serialization_as_tensor_content",
    }
)


# --------------------------------------------------------------------------- parsing


def parse_dockerfile(text):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


class Stage:
    def __init__(self, image, name):
        self.image, self.name = image, name
        self.instructions = []
        self.vars = {}

    def all(self, keyword):
        return [rest for kw, rest in self.instructions if kw == keyword]

    def one(self, keyword):
        found = self.all(keyword)
        assert len(found) == 1, f"stage {self.name!r}: expected one {keyword}, found {found}"
        return found[0]


def substitute(text, variables):
    def repl(match):
        name = match.group(1) or match.group(2)
        return variables[name] if name in variables else match.group(0)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, text)


def _assignments(rest):
    """NAME=value pairs of an ARG or ENV line (values may be quoted)."""
    out = {}
    for token in shlex.split(rest):
        name, eq, value = token.partition("=")
        out[name] = value if eq else None
    return out


def stages_of(instructions):
    global_args, stages = {}, []
    for keyword, rest in instructions:
        if keyword == "FROM":
            parts = rest.split()
            image = substitute(parts[0], global_args)
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
            continue
        if not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, found {keyword}"
            global_args.update({k: v or "" for k, v in _assignments(rest).items()})
            continue
        stage = stages[-1]
        stage.instructions.append((keyword, rest))
        if keyword in ("ARG", "ENV"):
            for name, value in _assignments(rest).items():
                if value is None:  # ARG NAME: inherits the global default
                    value = global_args.get(name, "")
                stage.vars[name] = substitute(value, stage.vars)
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile():
    with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
        global_args, stages = stages_of(parse_dockerfile(f.read()))
    assert len(stages) == 2, [s.image for s in stages]
    return global_args, stages[0], stages[1]


def export_command(stage):
    """The `tfp-vae export ...` words of the export stage, variables substituted."""
    (run,) = [r for r in stage.all("RUN") if "tfp-vae export" in r]
    words = shlex.split(substitute(run[run.index("tfp-vae export") :], stage.vars))
    return words[2:]


def server_command(stage):
    entrypoint = json.loads(stage.one("ENTRYPOINT"))
    assert entrypoint[:2] == ["/bin/sh", "-c"] and entrypoint[3:] == ["--"], entrypoint
    words = shlex.split(substitute(entrypoint[2], stage.vars))
    assert words[0] == "exec" and words[1] == "/usr/bin/tensorflow_model_server", words[:2]
    assert words[-1] == "$@", "extra `docker run` arguments must reach the server"
    flags = {}
    for word in words[2:-1]:
        assert word.startswith("--"), f"not a flag: {word!r}"
        name, _, value = word[2:].partition("=")
        flags[name] = value
    return flags


def parsed_export_args(stage, run_dir="RUN"):
    parser = argparse.ArgumentParser()
    export.add_export_arguments(parser)
    words = [run_dir if w == "$run" else w for w in export_command(stage)]
    return parser.parse_args(words)


# ----------------------------------------------------------------------------- tests


def test_serving_image_matches_installed_tensorflow(dockerfile):
    global_args, _, serving = dockerfile
    assert global_args["TF_VERSION"] == tf.__version__
    assert serving.image == f"tensorflow/serving:{tf.__version__}-gpu"


def test_export_stage_is_python_311_and_installs_the_package(dockerfile):
    _, build, _ = dockerfile
    assert build.name == "export"
    assert re.fullmatch(r"python:3\.11(\.\d+)?(-slim)?", build.image), build.image
    assert any(re.search(r"\bpip install \.(\s|$)", r) for r in build.all("RUN"))
    assert build.one("COPY") == ". /src" and build.one("WORKDIR") == "/src"


def test_export_stage_exports_a_given_run_or_trains_the_default(dockerfile):
    _, build, _ = dockerfile
    (run,) = [r for r in build.all("RUN") if "tfp-vae export" in r]
    assert 'run="${RUN_DIR}"' in run and 'if [ -z "$run" ]' in run
    assert "tfp-vae train ${TRAIN_ARGS} --out /tmp/run" in run
    assert build.vars["RUN_DIR"] == ""
    train = shlex.split(build.vars["TRAIN_ARGS"])
    assert train[train.index("--dataset") + 1] == "mnist5k"


def test_export_command_parses_and_paths_agree(dockerfile):
    global_args, build, serving = dockerfile
    args = parsed_export_args(build)
    name = global_args["MODEL_NAME"]
    assert args.name == name == serving.vars["MODEL_NAME"]
    copy = serving.one("COPY").split()
    assert copy[0] == "--from=export"
    source, target = substitute(copy[1], serving.vars), substitute(copy[2], serving.vars)
    # What the export stage writes is what the serving image gets, where models.config says.
    assert source == posixpath.join(args.base_path, args.name)
    assert target == args.server_base_path == f"/models/{name}"


def test_server_flags_are_known_and_consistent(dockerfile):
    global_args, build, serving = dockerfile
    flags = server_command(serving)
    unknown = sorted(set(flags) - MODEL_SERVER_FLAGS)
    assert not unknown, f"tensorflow_model_server has no flags {unknown}"
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    model_dir = parsed_export_args(build).server_base_path
    assert flags["model_config_file"] == posixpath.join(model_dir, server_config.MODELS_CONFIG)
    assert flags["batching_parameters_file"] == posixpath.join(
        model_dir, server_config.BATCHING_PARAMETERS
    )
    # --model_config_file replaces --model_name/--model_base_path; both would be ambiguous.
    assert "model_name" not in flags and "model_base_path" not in flags
    assert set(serving.one("EXPOSE").split()) == {"8500", "8501"}


def test_healthcheck_polls_the_model_status(dockerfile):
    _, _, serving = dockerfile
    check = serving.one("HEALTHCHECK")
    assert "CMD" in check
    command = check[check.index("CMD") + 3 :]
    assert "http://localhost:8501/v1/models/${MODEL_NAME}" in command
    assert '"AVAILABLE"' in command


def test_known_flags_list_is_not_a_rubber_stamp():
    assert "port" in MODEL_SERVER_FLAGS
    for made_up in ("batching_parameters", "models_config_file", "enable_warmup", "grpc_port"):
        assert made_up not in MODEL_SERVER_FLAGS


def test_export_as_the_image_does_gives_the_layout_the_server_expects(dockerfile, tmp_path):
    """Runs the Dockerfile's export command on a tiny model, with /export mapped to tmp_path."""
    global_args, build, serving = dockerfile
    encoder, decoder = tfp_vae.networks.build("mlp", 2, (8, 8, 1), hidden=(16,))
    model = tfp_vae.VAE(encoder, decoder, latent_dim=2)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    args = parsed_export_args(build, str(run))
    container_export = args.base_path
    args.base_path = str(tmp_path / container_export.strip("/"))
    args.validate = False
    assert export.run_export(args) == 0

    def on_host(container_path):
        rel = posixpath.relpath(container_path, args.server_base_path)
        return os.path.join(args.base_path, args.name, *rel.split("/"))

    flags = server_command(serving)
    config = server_config.read_models_config(on_host(flags["model_config_file"]))
    (entry,) = config.model_config_list.config
    assert entry.name == global_args["MODEL_NAME"]
    assert entry.base_path == args.server_base_path
    assert os.path.isfile(os.path.join(on_host(entry.base_path), "1", "saved_model.pb"))
    batching = server_config.read_batching_parameters(on_host(flags["batching_parameters_file"]))
    assert batching.allowed_batch_sizes[-1] == batching.max_batch_size.value


def test_dockerignore_keeps_sources_and_drops_local_state():
    with open(os.path.join(REPO_ROOT, ".dockerignore")) as f:
        patterns = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert {".git", ".venv"} <= patterns
    for needed in ("setup.py", "tfp_vae", "export", "serving", "runs"):
        assert needed not in patterns


def test_tfp_vae_command_accepts_the_dockerfile_commands(dockerfile):
    """`tfp-vae train ${TRAIN_ARGS}` and `tfp-vae export ...` parse with the real command."""
    cli = pytest.importorskip("serving.cli")
    _, build, _ = dockerfile
    parser = cli.build_parser()
    train = parser.parse_args(
        ["train", *shlex.split(build.vars["TRAIN_ARGS"]), "--out", "/tmp/run"]
    )
    assert train.command == "train"
    words = ["RUN" if w == "$run" else w for w in export_command(build)]
    exported = parser.parse_args(["export", *words])
    assert exported.command == "export"
    assert exported.server_base_path == "/models/" + build.vars["MODEL_NAME"]
