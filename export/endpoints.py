"""Serving endpoints built from a model's own methods.

``plan(model, decoder_only, num_ll_samples)`` returns what the exporter hands to
``keras.export.ExportArchive``: the layers to ``track`` and, for each row of the
signature table (``export.contract.SIGNATURES``), the row's ``compute`` as a function
of the signature's inputs returning a dict of tensors. Nothing here draws randomness
of its own: every sample comes from the per-row sampler (``tfp_vae.row_sampling``),
keyed by the ``seed`` input.

A decoder-only export must not carry the encoder. ``generate`` needs only the prior
and the decoder, except for the VampPrior, whose components q(z | u_k) are the encoder
applied to the pseudo-inputs u_k. Those components are fixed once the model is
trained, so the exporter evaluates them once and stores their parameters (mixture
logits, locations, scales) as non-trainable variables of a small ``FrozenPrior``
layer; the exported ``generate`` samples that frozen mixture and never calls the
encoder.
"""

import dataclasses

from export import contract
from tfp_vae._backend import keras, tf, tfd
from tfp_vae.row_sampling import sample_rows


class ExportModelError(ValueError):
    """The model cannot be exported as asked; the message says why."""


def model_kind(model):
    """contract.VAE or contract.AUTOENCODER, from the model's class or else its methods."""
    import tfp_vae

    if isinstance(model, tfp_vae.VAE):
        return contract.VAE
    autoencoder_cls = getattr(tfp_vae, "Autoencoder", None)
    if autoencoder_cls is not None and isinstance(model, autoencoder_cls):
        return contract.AUTOENCODER
    vae_methods = ("posterior", "prior", "decode_mean", "generate", "log_likelihood_from_seeds")
    if all(hasattr(model, m) for m in vae_methods):
        return contract.VAE
    if all(hasattr(model, m) for m in ("encode", "reconstruct")) and (
        hasattr(model, "decode_mean") or hasattr(model, "decode")
    ):
        return contract.AUTOENCODER
    raise ExportModelError(
        f"Cannot export a {type(model).__name__}: expected a tfp_vae.VAE (posterior, prior, "
        "decode_mean, generate, log_likelihood_from_seeds) or an autoencoder (encode, "
        "decode/decode_mean, reconstruct)."
    )


def model_shapes(model):
    """(latent_dim, data_shape) of a built model."""
    if not getattr(model, "built", False):
        raise ExportModelError(
            f"The {type(model).__name__} is not built; build it (call it on a batch, or "
            "load it from a run directory) before exporting."
        )
    latent_dim = getattr(model, "latent_dim", None)
    data_shape = getattr(model, "data_shape", None)
    if not isinstance(latent_dim, int) or latent_dim <= 0:
        raise ExportModelError(f"model.latent_dim must be a positive integer, got {latent_dim!r}.")
    if not data_shape or any(not isinstance(s, int) or s <= 0 for s in data_shape):
        raise ExportModelError(
            f"model.data_shape must be a tuple of positive integers, got {data_shape!r}."
        )
    return latent_dim, tuple(data_shape)


class FrozenPrior(keras.layers.Layer):
    """A Gaussian or Gaussian-mixture prior held as fixed numbers.

    Built from a distribution evaluated once (``from_distribution``), so sampling it
    needs none of the layers that produced those numbers.
    """

    def __init__(self, loc, scale, scale_kind, logits=None, **kwargs):
        super().__init__(trainable=False, **kwargs)
        if scale_kind not in ("diag", "tril"):
            raise ValueError(f"scale_kind must be 'diag' or 'tril', got {scale_kind!r}.")
        self._values = {"loc": loc, "scale": scale}
        if logits is not None:
            self._values["logits"] = logits
        self.scale_kind = scale_kind
        self.build()

    def build(self, input_shape=None):
        for name, value in self._values.items():
            weight = self.add_weight(
                shape=tuple(value.shape), initializer="zeros", trainable=False, name=name
            )
            weight.assign(value)
            setattr(self, name, weight)
        self.built = True

    @classmethod
    def from_distribution(cls, distribution, name="frozen_prior"):
        """Freezes an MVN (diag or tril) or a MixtureSameFamily of one."""
        logits = None
        components = distribution
        if isinstance(distribution, tfd.MixtureSameFamily):
            logits = tf.convert_to_tensor(distribution.mixture_distribution.logits_parameter())
            components = distribution.components_distribution
        if not isinstance(components, tfd.MultivariateNormalLinearOperator):
            raise ExportModelError(
                f"Cannot freeze a {type(distribution).__name__} prior for a decoder-only "
                "export: only Gaussian and Gaussian-mixture priors are supported."
            )
        operator = components.scale
        batch = components.batch_shape_tensor()
        event = components.event_shape_tensor()
        loc = tf.broadcast_to(components.mean(), tf.concat([batch, event], 0))
        if isinstance(operator, tf.linalg.LinearOperatorDiag):
            scale, kind = tf.broadcast_to(operator.diag_part(), tf.shape(loc)), "diag"
        else:
            scale, kind = operator.to_dense(), "tril"
            scale = tf.broadcast_to(scale, tf.concat([batch, event, event], 0))
        return cls(
            loc.numpy(),
            scale.numpy(),
            kind,
            None if logits is None else logits.numpy(),
            name=name,
        )

    def call(self, inputs=None):
        raise TypeError("FrozenPrior is not called on tensors; use .distribution() instead.")

    def distribution(self):
        if self.scale_kind == "diag":
            components = tfd.MultivariateNormalDiag(loc=self.loc, scale_diag=self.scale)
        else:
            components = tfd.MultivariateNormalTriL(loc=self.loc, scale_tril=self.scale)
        if not hasattr(self, "logits"):
            return components
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=self.logits),
            components_distribution=components,
        )


@dataclasses.dataclass
class ExportPlan:
    """What goes into the archive: tracked layers and one function per signature."""

    kind: str
    decoder_only: bool
    latent_dim: int
    data_shape: tuple
    track: list
    functions: dict  # signature name -> (fn, contract.SignatureSpec)
    manifest: dict  # facts about the model recorded beside the SavedModel

    def input_signature(self, name):
        spec = self.functions[name][1]
        return [tf.TensorSpec(t.shape, t.dtype, name=key) for key, t in spec.inputs.items()]


def _shaped(outputs, spec):
    """Pins each output to its contract shape (batch dimension left unknown)."""
    missing = set(spec.outputs) - set(outputs)
    if missing:
        raise ExportModelError(
            f"Signature {spec.name!r}: the model returned keys {sorted(outputs)}, "
            f"expected {sorted(spec.outputs)}."
        )
    return {
        key: tf.ensure_shape(tf.cast(outputs[key], t.dtype), t.shape)
        for key, t in spec.outputs.items()
    }


def _variable_paths(*layers):
    return sorted({v.path for layer in layers if layer is not None for v in layer.variables})


def encoder_variable_paths(model, kind=None):
    """Paths of the variables a decoder-only export must not carry.

    For a VAE: the encoder and the posterior head. For an autoencoder: every variable
    of the model that is not the decoder's.
    """
    kind = kind or model_kind(model)
    if kind == contract.VAE:
        return _variable_paths(model.encoder, getattr(model, "posterior_head", None))
    decoder = set(_variable_paths(getattr(model, "decoder", None)))
    return sorted(set(_variable_paths(model)) - decoder)


def _no_encoder(_):
    raise ExportModelError(
        "This prior needs the encoder, which a decoder-only export does not carry."
    )


class DecoderOnlyVAE:
    """What a decoder-only export of a VAE sees: the decoder and the prior, no encoder.

    ``decode_mean`` and ``generate`` are the model's own; the prior is the model's prior
    layer, except for a VampPrior, whose components (the encoder at the pseudo-inputs)
    are evaluated once and frozen into a ``FrozenPrior``.
    """

    def __init__(self, model):
        from tfp_vae.priors import VampPrior

        self.model = model
        if isinstance(model.prior_layer, VampPrior):
            self.prior_source = FrozenPrior.from_distribution(model.prior())
            self.prior = self.prior_source.distribution
        else:
            self.prior_source = model.prior_layer
            self.prior = lambda: model.prior_layer.distribution(posterior_fn=_no_encoder)

    def decode_mean(self, z):
        return self.model.decode_mean(z)

    def generate(self, seeds):
        z = sample_rows(self.prior(), seeds)
        return {"x": self.model.decode_mean(z), "z": z}


def _tracked_layers(model, kind, decoder_only, view):
    if kind == contract.VAE:
        track = [model.decoder, model.likelihood_layer]
        if decoder_only:
            return track + [view.prior_source]
        track += [model.encoder, model.posterior_head, model.prior_layer]
        if isinstance(model.posterior_family, keras.layers.Layer):  # a flow has weights
            track.append(model.posterior_family)
        return track
    if not decoder_only:
        return [model]
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, keras.layers.Layer):
        raise ExportModelError(
            f"A decoder-only export of a {type(model).__name__} needs its decoder as "
            f"model.decoder (a Keras layer); got {decoder!r}."
        )
    return [decoder]


def _endpoint(row, spec, source, options):
    """The function of the signature's inputs that the archive traces for ``row``."""
    keys = row.input_keys

    def endpoint(*args):
        return _shaped(row.compute(source, options, **dict(zip(keys, args))), spec)

    endpoint.__name__ = row.name
    return endpoint


def plan(model, decoder_only=False, num_ll_samples=100):
    """The ExportPlan for ``model`` (a built tfp_vae.VAE or autoencoder).

    One endpoint per row of ``export.contract.SIGNATURES`` for the model's kind: the
    row's ``compute`` applied to the model (or, decoder-only, to a ``DecoderOnlyVAE``).
    """
    if (
        not isinstance(num_ll_samples, int)
        or isinstance(num_ll_samples, bool)
        or num_ll_samples < 1
    ):
        raise ExportModelError(
            f"num_ll_samples must be a positive integer, got {num_ll_samples!r}."
        )
    kind = model_kind(model)
    latent_dim, data_shape = model_shapes(model)
    rows = contract.signatures(kind, decoder_only)
    view = DecoderOnlyVAE(model) if (kind == contract.VAE and decoder_only) else model
    options = {"num_ll_samples": num_ll_samples}
    functions = {}
    for row in rows:
        spec = row.spec(latent_dim, data_shape)
        functions[row.name] = (_endpoint(row, spec, view, options), spec)
    manifest = {}
    if kind == contract.VAE:
        manifest.update(
            prior=type(model.prior_layer).__name__,
            posterior=model.posterior_family.name,
            likelihood=type(model.likelihood_layer).__name__,
        )
        if not decoder_only:
            manifest["num_ll_samples"] = num_ll_samples
        elif isinstance(view.prior_source, FrozenPrior):
            manifest["prior_frozen"] = True
    if decoder_only:
        manifest["encoder_variables"] = encoder_variable_paths(model, kind)
    return ExportPlan(
        kind=kind,
        decoder_only=bool(decoder_only),
        latent_dim=latent_dim,
        data_shape=data_shape,
        track=_tracked_layers(model, kind, decoder_only, view),
        functions=functions,
        manifest=manifest,
    )
