"""What runs when TF Serving executes a signature: the ops, and whether each can run on GPU.

For a signature we collect every node that its outputs depend on in the MetaGraph's
top-level graph, and then every node of every library function those nodes reach
(function-call ops such as ``StatefulPartitionedCall``, and function-valued attributes
such as a ``While``'s ``cond``/``body`` or an ``If``'s branches), recursively.

Each op found is judged by these rules, in order:

1. **Unknown op**: no OpDef is registered in this TensorFlow for it and it is not a
   library function. TF Serving (built on the same TensorFlow) could not load the graph
   without a custom op library.
2. **Python callback** (``PyFunc``, ``PyFuncStateless``, ``EagerPyFunc``): the Python
   function is not part of the SavedModel; TF Serving cannot run it.
3. **Stateful random op** (a stateful op with Random / Rng / Multinomial /
   TruncatedNormal / Shuffle / SeedGenerator in its name): its draws depend on hidden
   state, so a seed row would not give the same sample twice.
4. **GPU kernel**: the op needs a kernel registered for device type ``GPU`` or
   ``DEFAULT`` (TensorFlow's registration for every device, GPU included: variable
   reads, ``While``, function calls, ``Placeholder``, ``NoOp`` live there) whose type
   constraints admit the node's dtypes. A GPU kernel that keeps some arguments in host
   memory (``HostMemory``, e.g. shapes and int32 seeds) still counts: the op is placed
   on the GPU and only those arguments stay on the host. Ops the runtime executes
   without any kernel are listed in ``RUNTIME_OPS``. The pip wheel registers GPU kernels
   even on machines without a GPU, so this check runs anywhere.

The first rule an op breaks is reported; a clean op is silent.
"""

import dataclasses
import re

from tensorflow.core.framework import types_pb2
from tensorflow.python.framework import kernels, op_def_registry

PY_FUNC_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# Ops executed by the runtime itself, without a registered device kernel.
RUNTIME_OPS = frozenset({"_Arg", "_Retval", "_DeviceArg", "_DeviceRetval"})

GPU_DEVICE_TYPES = frozenset({"GPU", "DEFAULT"})

_RANDOM_NAME = re.compile(r"Random|Rng|Multinomial|TruncatedNormal|Shuffle|SeedGenerator")

UNKNOWN = "unknown op"
PY_FUNC = "python callback op"
STATEFUL_RANDOM = "stateful random op"
NO_GPU_KERNEL = "no GPU kernel"


@dataclasses.dataclass(frozen=True)
class OpProblem:
    signature: str
    op: str
    node: str  # node name, prefixed by the library function it sits in
    rule: str
    detail: str

    def __str__(self):
        return f"[{self.signature}] {self.rule}: {self.op} (node {self.node}): {self.detail}"


def _node_name(tensor_name):
    return tensor_name.lstrip("^").split(":")[0]


def _function_attrs(node):
    """Names of library functions referenced by a node's attributes."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def signature_nodes(meta_graph, signature_name):
    """(where, node) for every node a signature executes; ``where`` is "graph" or a function."""
    graph = meta_graph.graph_def
    by_name = {n.name: n for n in graph.node}
    library = {f.signature.name: f for f in graph.library.function}
    signature = meta_graph.signature_def[signature_name]

    found = []
    seen_functions = set()
    pending_functions = []

    def visit_node(where, node):
        found.append((where, node))
        if node.op in library:
            pending_functions.append(node.op)
        pending_functions.extend(_function_attrs(node))

    stack = [_node_name(t.name) for t in signature.outputs.values()]
    seen_nodes = set()
    while stack:
        name = stack.pop()
        if name in seen_nodes or name not in by_name:
            continue
        seen_nodes.add(name)
        node = by_name[name]
        visit_node("graph", node)
        stack.extend(_node_name(i) for i in node.input)

    while pending_functions:
        fname = pending_functions.pop()
        if fname in seen_functions or fname not in library:
            continue
        seen_functions.add(fname)
        for node in library[fname].node_def:
            visit_node(fname, node)
    return found, set(library)


def _attr_types(value):
    if value.HasField("list"):
        return list(value.list.type)
    if value.WhichOneof("value") == "type":
        return [value.type]
    return None  # placeholder or another kind: not checkable


def _kernel_admits(kernel, node, op_def):
    defaults = {a.name: a.default_value for a in op_def.attr if a.HasField("default_value")}
    for constraint in kernel.constraint:
        value = node.attr.get(constraint.name) if constraint.name in node.attr else None
        if value is None:
            value = defaults.get(constraint.name)
        if value is None:
            continue
        types = _attr_types(value)
        if types is None:
            continue
        allowed = set(constraint.allowed_values.list.type)
        if any(t not in allowed for t in types):
            return False
    return True


def _dtype_names(node):
    names = []
    for key, value in sorted(node.attr.items()):
        types = _attr_types(value)
        if types:
            names.append(f"{key}={','.join(types_pb2.DataType.Name(t)[3:].lower() for t in types)}")
    return " ".join(names)


def judge(node, library_names):
    """(rule, detail) for the first rule ``node`` breaks, or None when it is fine."""
    op = node.op
    if op in library_names or op in RUNTIME_OPS:
        return None
    op_def = op_def_registry.get(op)
    if op_def is None:
        return UNKNOWN, "not registered in this TensorFlow; TF Serving could not load it"
    if op in PY_FUNC_OPS:
        return PY_FUNC, "calls back into Python, which TF Serving cannot run"
    if op_def.is_stateful and _RANDOM_NAME.search(op):
        return STATEFUL_RANDOM, "draws from hidden state; use TFP's stateless samplers with a seed"
    registered = kernels.get_registered_kernels_for_op(op).kernel
    gpu = [k for k in registered if k.device_type in GPU_DEVICE_TYPES]
    if not gpu:
        devices = sorted({k.device_type for k in registered}) or ["none"]
        return NO_GPU_KERNEL, f"kernels only for {devices}; it would run on the CPU"
    if not any(_kernel_admits(k, node, op_def) for k in gpu):
        return NO_GPU_KERNEL, f"no GPU kernel accepts {_dtype_names(node)}; it would run on the CPU"
    return None


def check_signature(meta_graph, signature_name):
    """OpProblems of one signature (empty when every op is fine), and the op types seen."""
    nodes, library_names = signature_nodes(meta_graph, signature_name)
    problems = []
    reported = set()
    for where, node in nodes:
        verdict = judge(node, library_names)
        if verdict is None:
            continue
        key = (node.op, verdict[0], verdict[1])
        if key in reported:
            continue
        reported.add(key)
        label = node.name if where == "graph" else f"{where}/{node.name}"
        problems.append(OpProblem(signature_name, node.op, label, verdict[0], verdict[1]))
    ops = {node.op for _, node in nodes if node.op not in library_names}
    return problems, ops
