"""Serving endpoints built from a model's own methods.

``plan(model, decoder_only, num_ll_samples)`` returns what the exporter hands to
``keras.export.ExportArchive``: the layers to ``track`` and, for each signature of the
contract (``export.contract``), a function of the signature's inputs returning a dict of
tensors. Nothing here draws randomness of its own: every sample comes from TFP's
stateless samplers, driven row by row by the ``seed`` input.

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
from tfp_vae.vae import sample_rows


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


def _vae_plan(model, decoder_only, num_ll_samples, latent_dim, data_shape):
    from tfp_vae.priors import VampPrior

    kind = contract.VAE
    specs = {
        n: contract.signature_spec(n, kind, latent_dim, data_shape)
        for n in contract.expected_signatures(kind, decoder_only)
    }

    def decode(z):
        return _shaped({"mean": model.decode_mean(z)}, specs[contract.DECODE])

    track = [model.decoder, model.likelihood_layer]
    manifest = {
        "prior": type(model.prior_layer).__name__,
        "posterior": model.posterior_family.name,
        "likelihood": type(model.likelihood_layer).__name__,
    }
    if decoder_only:
        if isinstance(model.prior_layer, VampPrior):
            prior_source = FrozenPrior.from_distribution(model.prior())
            prior_fn = prior_source.distribution
            manifest["prior_frozen"] = True
        else:
            prior_source = model.prior_layer

            def prior_fn():
                return model.prior_layer.distribution(posterior_fn=_no_encoder)

        track.append(prior_source)

        def generate(seed):
            z = sample_rows(prior_fn(), seed)
            return _shaped({"x": model.decode_mean(z), "z": z}, specs[contract.GENERATE])

        manifest["encoder_variables"] = encoder_variable_paths(model, kind)
    else:
        track += [model.encoder, model.posterior_head, model.prior_layer]

        def generate(seed):
            return _shaped(model.generate(seed), specs[contract.GENERATE])

    functions = {
        contract.SERVING_DEFAULT: decode,
        contract.DECODE: decode,
        contract.GENERATE: generate,
    }

    if not decoder_only:

        def encode(x):
            # Each posterior family says what its encoding is: q's mean and scale for
            # the Gaussians, the flow linearized at the base mean for iaf.
            loc, scale_tril = model.posterior_family.encoding(model.posterior_params(x), latent_dim)
            return _shaped({"loc": loc, "scale_tril": scale_tril}, specs[contract.ENCODE])

        def reconstruct(x):
            return _shaped({"mean": model.reconstruct(x)}, specs[contract.RECONSTRUCT])

        def log_likelihood(x, seed):
            ll, elbo = model.log_likelihood_from_seeds(x, seed, num_ll_samples)
            return _shaped({"log_likelihood": ll, "elbo": elbo}, specs[contract.LOG_LIKELIHOOD])

        functions.update(
            {
                contract.ENCODE: encode,
                contract.RECONSTRUCT: reconstruct,
                contract.LOG_LIKELIHOOD: log_likelihood,
            }
        )
        manifest["num_ll_samples"] = num_ll_samples
    return track, {n: (functions[n], specs[n]) for n in specs}, manifest


def _autoencoder_plan(model, decoder_only, latent_dim, data_shape):
    kind = contract.AUTOENCODER
    specs = {
        n: contract.signature_spec(n, kind, latent_dim, data_shape)
        for n in contract.expected_signatures(kind, decoder_only)
    }
    decode_method = getattr(model, "decode_mean", None) or model.decode

    def decode(z):
        return _shaped({"mean": decode_method(z)}, specs[contract.DECODE])

    functions = {contract.SERVING_DEFAULT: decode, contract.DECODE: decode}
    manifest = {}
    if decoder_only:
        decoder = getattr(model, "decoder", None)
        if not isinstance(decoder, keras.layers.Layer):
            raise ExportModelError(
                f"A decoder-only export of a {type(model).__name__} needs its decoder as "
                f"model.decoder (a Keras layer); got {decoder!r}."
            )
        track = [decoder]
        manifest["encoder_variables"] = encoder_variable_paths(model, kind)
    else:
        track = [model]

        def encode(x):
            return _shaped({"code": model.encode(x)}, specs[contract.ENCODE])

        def reconstruct(x):
            return _shaped({"mean": model.reconstruct(x)}, specs[contract.RECONSTRUCT])

        functions.update({contract.ENCODE: encode, contract.RECONSTRUCT: reconstruct})
    return track, {n: (functions[n], specs[n]) for n in specs}, manifest


def plan(model, decoder_only=False, num_ll_samples=100):
    """The ExportPlan for ``model`` (a built tfp_vae.VAE or autoencoder)."""
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
    if kind == contract.VAE:
        track, functions, manifest = _vae_plan(
            model, decoder_only, num_ll_samples, latent_dim, data_shape
        )
    else:
        track, functions, manifest = _autoencoder_plan(model, decoder_only, latent_dim, data_shape)
    return ExportPlan(
        kind=kind,
        decoder_only=bool(decoder_only),
        latent_dim=latent_dim,
        data_shape=data_shape,
        track=track,
        functions=functions,
        manifest=manifest,
    )
