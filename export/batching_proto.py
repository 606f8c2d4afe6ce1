"""TF Serving's ``BatchingParameters`` message, which tensorflow-serving-api does not ship.

It lives in ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``,
which the pip package leaves out. The exporter writes ``batching_parameters.txt``
with this class and the local server parses that file with it, so both agree with
``tensorflow_model_server --batching_parameters_file``. TensorFlow-free.
"""

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

# BatchingParameters in session_bundle_config.proto: (name, number, wrapper or scalar).
BATCHING_FIELDS = (
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
    ("enable_large_batch_splitting", 8, "BoolValue"),
    ("max_execution_batch_size", 9, "Int64Value"),
)


@functools.lru_cache(maxsize=None)
def batching_parameters_class():
    """The ``tensorflow.serving.BatchingParameters`` message class.

    The generated module when it is importable; otherwise a message built from a
    descriptor mirroring BATCHING_FIELDS, in a private pool so it never clashes with
    the real one.
    """
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    for name, number, kind in BATCHING_FIELDS:
        field = message.field.add(name=name, number=number, label=F.LABEL_OPTIONAL)
        if kind == "repeated int64":
            field.label = F.LABEL_REPEATED
            field.type = F.TYPE_INT64
        elif kind == "bool":
            field.type = F.TYPE_BOOL
        else:
            field.type = F.TYPE_MESSAGE
            field.type_name = f".google.protobuf.{kind}"
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
