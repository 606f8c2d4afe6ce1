"""The serving contract of an exported model: signature names, tensor keys, dtypes, shapes.

One table drives both sides: the exporter builds each endpoint's ``input_signature``
from it, and the validator checks the written SignatureDefs and the tensors they
return against it.

With D the latent size, S the data shape and B the batch (always dimension 0, always
unknown, so TF Serving's batching can merge requests):

==================  ==================================  ===============================
signature           inputs                              outputs
==================  ==================================  ===============================
serving_default     same as decode                      same as decode
decode              z float32 [B, D]                    mean float32 [B, *S]
generate            seed int32 [B, 2]                   x float32 [B, *S], z float32 [B, D]
encode              x float32 [B, *S]                   loc float32 [B, D],
                                                        scale_tril float32 [B, D, D]
reconstruct         x float32 [B, *S]                   mean float32 [B, *S]
log_likelihood      x float32 [B, *S], seed int32 [B,2] log_likelihood float32 [B],
                                                        elbo float32 [B]
==================  ==================================  ===============================

Seeds: each ``seed`` row keys its own Philox stream (``tfp_vae.row_sampling``), the
whole batch sampled at once with no loop. ``generate``'s ``z`` for a seed row is
bit-identical in any batch; outputs that pass through the decoder or encoder agree
across batch sizes within float32 rounding (the validator's ROW_RTOL/ROW_ATOL).

A plain (deterministic) autoencoder has no distribution: its ``encode`` returns the
code itself as ``code`` float32 [B, D], and it has neither ``generate`` (no prior to
sample) nor ``log_likelihood``.
"""

import dataclasses

import numpy as np

SERVING_DEFAULT = "serving_default"
DECODE = "decode"
GENERATE = "generate"
ENCODE = "encode"
RECONSTRUCT = "reconstruct"
LOG_LIKELIHOOD = "log_likelihood"

VAE = "vae"
AUTOENCODER = "autoencoder"
KINDS = (VAE, AUTOENCODER)

# Signatures each kind of export carries, in the order they are added.
_SIGNATURES = {
    (VAE, False): (SERVING_DEFAULT, DECODE, GENERATE, ENCODE, RECONSTRUCT, LOG_LIKELIHOOD),
    (VAE, True): (SERVING_DEFAULT, DECODE, GENERATE),
    (AUTOENCODER, False): (SERVING_DEFAULT, DECODE, ENCODE, RECONSTRUCT),
    (AUTOENCODER, True): (SERVING_DEFAULT, DECODE),
}

# Signatures whose outputs depend on the ``seed`` input.
SEEDED_SIGNATURES = (GENERATE, LOG_LIKELIHOOD)

# The method name TF Serving's Predict API expects on every SignatureDef.
PREDICT_METHOD_NAME = "tensorflow/serving/predict"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """dtype (numpy name) and shape (None for the batch dimension) of one tensor."""

    dtype: str
    shape: tuple

    def describe(self):
        dims = ", ".join("B" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"

    def matches_shape(self, shape):
        """True if a concrete or SignatureDef shape fits (-1/None only at the batch dim)."""
        shape = tuple(None if d in (None, -1) else int(d) for d in shape)
        if len(shape) != len(self.shape):
            return False
        return all(want is None or got == want for want, got in zip(self.shape, shape))


@dataclasses.dataclass(frozen=True)
class SignatureSpec:
    """Inputs and outputs (key -> TensorSpec) of one signature; inputs in argument order."""

    name: str
    inputs: dict
    outputs: dict


def expected_signatures(kind, decoder_only):
    """The signature names an export of ``kind`` carries."""
    if kind not in KINDS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of {list(KINDS)}.")
    return _SIGNATURES[(kind, bool(decoder_only))]


def infer_kind(signature_names, encode_outputs=None):
    """(kind, decoder_only) of an export from its signature names, or None if no kind fits.

    ``encode_outputs`` (the output keys of ``encode``) separates the two kinds when both
    would carry the same names.
    """
    names = set(signature_names)
    for (kind, decoder_only), expected in _SIGNATURES.items():
        if names == set(expected):
            if ENCODE in names and encode_outputs is not None:
                want = set(signature_spec(ENCODE, kind, 1, (1,)).outputs)
                if set(encode_outputs) != want:
                    continue
            return kind, decoder_only
    return None


def signature_spec(name, kind, latent_dim, data_shape):
    """The SignatureSpec of signature ``name`` for a model with latent size D and data shape S."""
    d = int(latent_dim)
    s = tuple(int(v) for v in data_shape)
    z = TensorSpec("float32", (None, d))
    x = TensorSpec("float32", (None, *s))
    seed = TensorSpec("int32", (None, 2))
    if name in (SERVING_DEFAULT, DECODE):
        return SignatureSpec(name, {"z": z}, {"mean": x})
    if name == GENERATE:
        return SignatureSpec(name, {"seed": seed}, {"x": x, "z": z})
    if name == ENCODE:
        if kind == AUTOENCODER:
            return SignatureSpec(name, {"x": x}, {"code": z})
        return SignatureSpec(
            name, {"x": x}, {"loc": z, "scale_tril": TensorSpec("float32", (None, d, d))}
        )
    if name == RECONSTRUCT:
        return SignatureSpec(name, {"x": x}, {"mean": x})
    if name == LOG_LIKELIHOOD:
        scalar = TensorSpec("float32", (None,))
        return SignatureSpec(
            name, {"x": x, "seed": seed}, {"log_likelihood": scalar, "elbo": scalar}
        )
    raise ValueError(
        f"Unknown signature {name!r}; expected one of {sorted(set(sum(_SIGNATURES.values(), ())))}."
    )


def example_inputs(spec, batch_size, seed=0, seed_offset=0):
    """Deterministic inputs for ``spec`` with ``batch_size`` rows (numpy arrays).

    ``x`` is uniform in [0, 1] (valid for both likelihoods), ``z`` standard normal, and
    seed row i is (seed + 1000, seed_offset + i), so rows carry distinct seeds.
    """
    rng = np.random.default_rng(seed)
    inputs = {}
    for key, tensor in spec.inputs.items():
        shape = (batch_size, *tensor.shape[1:])
        if key == "seed":
            inputs[key] = np.stack(
                [
                    np.full(batch_size, 1000 + seed, np.int32),
                    np.arange(seed_offset, seed_offset + batch_size, dtype=np.int32),
                ],
                axis=1,
            )
        elif key == "z":
            inputs[key] = rng.standard_normal(shape).astype(np.float32)
        else:
            inputs[key] = rng.uniform(size=shape).astype(np.float32)
    return inputs
