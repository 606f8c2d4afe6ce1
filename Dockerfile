# syntax=docker/dockerfile:1
#
# GPU serving image for a tfp-vae model (see docs/serving-gpu.md).
#
#   docker build -t tfp-vae-serving .                                   # trains the default model
#   docker build --build-arg RUN_DIR=runs/mnist -t tfp-vae-serving .    # exports an existing run
#   docker run --gpus all -p 8500:8500 -p 8501:8501 tfp-vae-serving
#
# Stage "export" installs the package and writes /export/$MODEL_NAME/ (version 1,
# models.config, batching_parameters.txt); the final stage is the official
# tensorflow/serving GPU image of the same TensorFlow version as the package pins.

# Must equal the installed tensorflow version (tests/test_export_dockerfile.py checks it).
ARG TF_VERSION=2.21.0
ARG MODEL_NAME=vae

FROM python:3.11-slim AS export
ARG MODEL_NAME
# A run directory inside the build context (model.keras, config.json); empty: train one.
ARG RUN_DIR=""
ARG TRAIN_ARGS="--dataset mnist5k --network conv --posterior diag --prior normal --likelihood bernoulli --latent-dim 2 --epochs 10 --batch-size 100 --seed 0 --eval-examples 200"
# More `tfp-vae export` flags, e.g. "--decoder-only --max-batch-size 128".
ARG EXPORT_ARGS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /src
COPY . /src
RUN pip install .
RUN set -eu; \
    run="${RUN_DIR}"; \
    if [ -z "$run" ]; then \
        tfp-vae train ${TRAIN_ARGS} --out /tmp/run; \
        run=/tmp/run; \
    fi; \
    tfp-vae export "$run" --base-path /export --name "${MODEL_NAME}" --version 1 \
        --server-base-path "/models/${MODEL_NAME}" ${EXPORT_ARGS}

FROM tensorflow/serving:${TF_VERSION}-gpu
ARG MODEL_NAME
ENV MODEL_NAME=${MODEL_NAME}
COPY --from=export /export/${MODEL_NAME} /models/${MODEL_NAME}
# gRPC, REST
EXPOSE 8500 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS "http://localhost:8501/v1/models/${MODEL_NAME}" | grep -q '"AVAILABLE"' || exit 1
# Arguments given to `docker run IMAGE ...` are appended as further server flags.
ENTRYPOINT ["/bin/sh", "-c", "exec /usr/bin/tensorflow_model_server --port=8500 --rest_api_port=8501 --model_config_file=/models/${MODEL_NAME}/models.config --enable_batching=true --batching_parameters_file=/models/${MODEL_NAME}/batching_parameters.txt --enable_model_warmup=true \"$@\"", "--"]
