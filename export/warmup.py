"""Warmup requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays these PredictionLog records when it loads a version, before it
reports the version AVAILABLE, so the first real request does not pay for graph
optimization and kernel autotuning. We write one Predict request per signature with a
small batch of deterministic inputs (``contract.example_inputs``).
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_path(version_dir):
    return os.path.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)


def write_warmup_requests(version_dir, model_name, inputs_by_signature):
    """Writes one PredictRequest per signature; returns the file's path.

    ``inputs_by_signature`` maps a signature name to {input key: numpy array}.
    """
    path = warmup_path(version_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in inputs_by_signature.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path):
    """[(signature name, {input key: numpy array})] from a warmup file, in file order.

    Raises ValueError naming the record when one is not a PredictionLog with a
    predict_log request (the only kind we write).
    """
    records = []
    for index, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(
                f"{path}: record {index} holds a {log.WhichOneof('log_type')!r} log, "
                "expected 'predict_log'."
            )
        request = log.predict_log.request
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        records.append((request.model_spec.signature_name or "serving_default", inputs))
    return records
