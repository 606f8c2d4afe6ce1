"""The serving contract of an exported model: signature names, tensor keys, dtypes, shapes.

``SIGNATURES`` is the one table of what an export serves: for each kind of model, each
signature's name, its input and output tensors, and the model method that computes it
(``Signature.compute``). Everything else reads it: the exporter traces ``compute`` into
each endpoint with the table's ``input_signature``; the validator checks the written
SignatureDefs against it and runs the same ``compute`` eagerly on the live model as
the reference; the clients (``serving.model_methods``) take their signature names and
tensor keys from it; the test fixtures export their model through it. Adding a
signature is a row here plus the model method it calls. This module imports no
TensorFlow, so a REST-only client can read it.

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

# The method name TF Serving's Predict API expects on every SignatureDef.
PREDICT_METHOD_NAME = "tensorflow/serving/predict"

# Importance samples per row baked into ``log_likelihood`` unless the export asks for
# another k (``num_ll_samples``), and the batch sizes the validator runs every
# signature at. Here so the command line can show them without loading TensorFlow.
DEFAULT_NUM_LL_SAMPLES = 100
DEFAULT_VALIDATION_BATCH_SIZES = (2, 5)


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


# Shape templates: "B" the batch (unknown), "D" the latent size, "S" the data shape
# (expanded in place), integers as they are.
_Z = ("float32", ("B", "D"))
_X = ("float32", ("B", "S"))
_SEED = ("int32", ("B", 2))
_PER_ROW = ("float32", ("B",))


@dataclasses.dataclass(frozen=True)
class Signature:
    """One row of the table: a signature's tensors and the model method behind it.

    ``compute(model, options, **inputs)`` returns the outputs as a dict of tensors; the
    exporter traces it into the SavedModel and the validator runs it eagerly on the
    live model as the reference. ``options`` carries export-time settings
    (``num_ll_samples``).
    """

    name: str
    inputs: tuple  # ((key, (dtype, shape template)), ...) in argument order
    outputs: tuple
    compute: object
    decoder_only: bool  # carried by a decoder-only export too

    def spec(self, latent_dim, data_shape):
        """The SignatureSpec for latent size D and data shape S."""
        return SignatureSpec(
            self.name,
            {key: _resolve(t, latent_dim, data_shape) for key, t in self.inputs},
            {key: _resolve(t, latent_dim, data_shape) for key, t in self.outputs},
        )

    @property
    def input_keys(self):
        return tuple(key for key, _ in self.inputs)

    @property
    def output_keys(self):
        return tuple(key for key, _ in self.outputs)


def _resolve(template, latent_dim, data_shape):
    dtype, dims = template
    shape = []
    for dim in dims:
        if dim == "B":
            shape.append(None)
        elif dim == "D":
            shape.append(int(latent_dim))
        elif dim == "S":
            shape.extend(int(v) for v in data_shape)
        else:
            shape.append(int(dim))
    return TensorSpec(dtype, tuple(shape))


def _vae_encode(model, options, x):
    # Each posterior family says what its encoding is: q's mean and scale for the
    # Gaussians, the flow linearized at the base mean for iaf.
    loc, scale_tril = model.posterior_family.encoding(model.posterior_params(x), model.latent_dim)
    return {"loc": loc, "scale_tril": scale_tril}


def _log_likelihood(model, options, x, seed):
    ll, elbo = model.log_likelihood_from_seeds(x, seed, options["num_ll_samples"])
    return {"log_likelihood": ll, "elbo": elbo}


def _decode(model, options, z):
    return {"mean": model.decode_mean(z)}


def _reconstruct(model, options, x):
    return {"mean": model.reconstruct(x)}


_DECODE_ROW = dict(inputs=(("z", _Z),), outputs=(("mean", _X),), compute=_decode, decoder_only=True)
_RECONSTRUCT_ROW = dict(
    inputs=(("x", _X),), outputs=(("mean", _X),), compute=_reconstruct, decoder_only=False
)

# THE TABLE. Adding a signature: a row here (and the model method it calls).
SIGNATURES = {
    VAE: (
        Signature(SERVING_DEFAULT, **_DECODE_ROW),
        Signature(DECODE, **_DECODE_ROW),
        Signature(
            GENERATE,
            inputs=(("seed", _SEED),),
            outputs=(("x", _X), ("z", _Z)),
            compute=lambda model, options, seed: model.generate(seed),
            decoder_only=True,
        ),
        Signature(
            ENCODE,
            inputs=(("x", _X),),
            outputs=(("loc", _Z), ("scale_tril", ("float32", ("B", "D", "D")))),
            compute=_vae_encode,
            decoder_only=False,
        ),
        Signature(RECONSTRUCT, **_RECONSTRUCT_ROW),
        Signature(
            LOG_LIKELIHOOD,
            inputs=(("x", _X), ("seed", _SEED)),
            outputs=(("log_likelihood", _PER_ROW), ("elbo", _PER_ROW)),
            compute=_log_likelihood,
            decoder_only=False,
        ),
    ),
    # A plain autoencoder has no distribution: ``encode`` returns the code itself, and
    # there is no prior to sample (no ``generate``) and no likelihood.
    AUTOENCODER: (
        Signature(SERVING_DEFAULT, **_DECODE_ROW),
        Signature(DECODE, **_DECODE_ROW),
        Signature(
            ENCODE,
            inputs=(("x", _X),),
            outputs=(("code", _Z),),
            compute=lambda model, options, x: {"code": model.encode(x)},
            decoder_only=False,
        ),
        Signature(RECONSTRUCT, **_RECONSTRUCT_ROW),
    ),
}

# Signatures whose outputs depend on the ``seed`` input.
SEEDED_SIGNATURES = tuple(
    row.name for row in SIGNATURES[VAE] if any(key == "seed" for key, _ in row.inputs)
)


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of {list(KINDS)}.")


def signatures(kind, decoder_only=False):
    """The table rows an export of ``kind`` carries, in the order they are added."""
    _check_kind(kind)
    return tuple(row for row in SIGNATURES[kind] if row.decoder_only or not decoder_only)


def signature(name, kind=VAE):
    """The table row of signature ``name`` for ``kind``."""
    _check_kind(kind)
    for row in SIGNATURES[kind]:
        if row.name == name:
            return row
    names = sorted({row.name for rows in SIGNATURES.values() for row in rows})
    raise ValueError(f"Unknown signature {name!r}; expected one of {names}.")


def expected_signatures(kind, decoder_only):
    """The signature names an export of ``kind`` carries."""
    return tuple(row.name for row in signatures(kind, decoder_only))


def infer_kind(signature_names, encode_outputs=None):
    """(kind, decoder_only) of an export from its signature names, or None if no kind fits.

    ``encode_outputs`` (the output keys of ``encode``) separates the two kinds when both
    would carry the same names.
    """
    names = set(signature_names)
    for kind in KINDS:
        for decoder_only in (False, True):
            if names != set(expected_signatures(kind, decoder_only)):
                continue
            if ENCODE in names and encode_outputs is not None:
                if set(encode_outputs) != set(signature(ENCODE, kind).output_keys):
                    continue
            return kind, decoder_only
    return None


def signature_spec(name, kind, latent_dim, data_shape):
    """The SignatureSpec of signature ``name`` for a model with latent size D and data shape S."""
    return signature(name, kind).spec(latent_dim, data_shape)


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
