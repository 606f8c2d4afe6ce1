r"""Variational autoencoder whose encoder outputs a TFP distribution.

The model is three objects:

    q(z|x)   = posterior(x)     encoder network -> parameters -> tfd.MultivariateNormal*
    p(x|z)   = decode(z)        decoder network -> tfd.Independent(Bernoulli | Normal)
    p(z)     = prior()          N(0, I), a learnable mixture, or a VampPrior

and the evidence lower bound (ELBO) on log p(x):

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))   =   -(distortion + rate).

The expectation is estimated with reparameterized samples z = mu + L eps
(``tfd`` samplers are reparameterized), so gradients flow to the encoder. How the KL
term is trained (``kl_method``): ``diag``, ``tril`` and ``iaf`` name the path-derivative
estimator (``kl="path"``: sampled from the same z as E_q[log q(z|x) - log p(z)], with
log q(z|x) evaluated at q's parameters held constant, so the gradient reaches the
encoder through z only; Roeder et al., 2017). ``tril_source`` (the source's Algorithm 2)
and ``kl="analytic"`` train with the closed form of ``tfd.kl_divergence`` where one is
registered for the (posterior, prior) pair -- Gaussian against Gaussian, diagonal or
full covariance -- and otherwise with the sampled estimate, as ``kl="sampled"`` does.
``elbo`` reports the KL's value in closed form wherever one is registered, whichever
estimator trains.

Training objectives:

* ``"elbo"``: minimize distortion + beta * w * rate, where beta weights the KL
  (beta-VAE) and w ramps linearly from 0 to 1 over ``kl_warmup_epochs``.
* ``"iwae"``: maximize the importance-weighted bound with k samples,
  log (1/k) sum_l p(x, z_l) / q(z_l|x), which tightens towards log p(x) as k grows.

``log_likelihood(x, num_samples)`` evaluates that same importance-sampled estimate with
many samples, in chunks so memory stays bounded whatever ``num_samples`` is.

Randomness: training draws seeds from a ``keras.random.SeedGenerator``; everything
else takes an explicit seed. ``generate(seeds)`` and ``log_likelihood_from_seeds``
take one seed row per example ([B, 2] int32): row i's noise comes from a Philox
stream keyed by that row alone, computed for the whole batch at once
(``tfp_vae.row_sampling``), so row i's latent draw is bit-identical in any batch.
"""

import math

from tfp_vae import likelihoods as likelihoods_lib
from tfp_vae import posteriors as posteriors_lib
from tfp_vae import priors as priors_lib
from tfp_vae._backend import keras, tf, tfd
from tfp_vae._training import TermsModel, as_float, known_input_shape
from tfp_vae import names, philox
from tfp_vae.row_sampling import POSTERIOR, sample_rows, seed_rows

OBJECTIVES = names.OBJECTIVES
KL_METHODS = names.KL_METHODS


def _flatten_leading(t, keep):
    """Merges all but the last ``keep`` dimensions of t into one."""
    rank = t.shape.rank  # static: every caller passes tensors of known rank
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([[-1], shape[rank - keep :]], 0)), shape[: rank - keep]


@keras.saving.register_keras_serializable(package="tfp_vae")
class VAE(TermsModel):
    """A VAE trained with ``model.fit``; see the module docstring for the mathematics.

    Args:
      encoder: Keras model mapping x [B, *S] to features [B, F]. The VAE adds the
        dense head that emits the posterior's parameters.
      decoder: Keras model mapping z [B, D] to one number per data element [B, *S].
      latent_dim: D.
      posterior: "diag" (MultivariateNormalDiag), "tril" (MultivariateNormalTriL with a damped
        off-diagonal), "tril_source" (the source's Algorithm 2), "iaf" (inverse
        autoregressive flow), or a ``posteriors.InverseAutoregressiveFlow`` layer.
      prior: None (standard normal), "normal", "mog", "vamp", or a ``priors.Prior``.
      likelihood: "bernoulli", "gaussian", or a ``likelihoods.Likelihood``.
      beta: weight of the KL term in the "elbo" objective.
      kl_warmup_epochs: ramp the KL weight linearly from 0 to beta over this many epochs.
      objective: "elbo" or "iwae".
      num_train_samples: posterior samples per example during training (k for IWAE).
      kl: "auto" (the family's own ``KL_ESTIMATOR`` if it names one -- "path" for every
        built-in family but tril_source -- else the closed form when registered, else sampled),
        "analytic" (require the closed form), "sampled",
        or "path": sampled, with the path-derivative ("sticking the landing") gradient --
        log q(z|x) evaluated with the posterior's parameters held constant, so its
        gradient reaches the encoder only through z (Roeder et al., 2017). The value of
        every term is the same as with "sampled"; only the gradient differs. A family
        with weights of its own (iaf) provides ``held_log_prob`` for it.
      seed: seed of the training randomness.
    """

    TERMS = ("loss", "elbo", "kl", "reconstruction")
    NESTED = ("encoder", "decoder", "prior", "likelihood")

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim,
        posterior="diag",
        prior=None,
        likelihood="bernoulli",
        beta=1.0,
        kl_warmup_epochs=0,
        objective="elbo",
        num_train_samples=1,
        kl="auto",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
        beta = float(beta)
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a non-negative finite number, got {beta!r}.")
        if not isinstance(kl_warmup_epochs, int) or kl_warmup_epochs < 0:
            raise ValueError(
                f"kl_warmup_epochs must be a non-negative integer, got {kl_warmup_epochs!r}."
            )
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}.")
        if not isinstance(num_train_samples, int) or num_train_samples < 1:
            raise ValueError(
                f"num_train_samples must be a positive integer, got {num_train_samples!r}."
            )
        if kl not in KL_METHODS:
            raise ValueError(f"kl must be one of {list(KL_METHODS)}, got {kl!r}.")

        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        if isinstance(posterior, dict):  # a family layer's config, from get_config
            posterior = keras.saving.deserialize_keras_object(posterior)
        self.posterior_family = posteriors_lib.get(posterior).bind(latent_dim)
        self.prior_layer = priors_lib.get(prior)
        if self.prior_layer.latent_dim is None:
            self.prior_layer.latent_dim = latent_dim
        elif self.prior_layer.latent_dim != latent_dim:
            raise ValueError(
                f"The prior has latent_dim={self.prior_layer.latent_dim} but the model has "
                f"latent_dim={latent_dim}."
            )
        self.likelihood_layer = likelihoods_lib.get(likelihood)
        self.beta = beta
        self.kl_warmup_epochs = kl_warmup_epochs
        self.objective = objective
        self.num_train_samples = num_train_samples
        self.kl = kl
        self.seed = seed
        self.posterior_head = keras.layers.Dense(
            self.posterior_family.params_size(latent_dim), name="posterior_params"
        )
        self.kl_weight = keras.Variable(
            0.0 if kl_warmup_epochs else 1.0, trainable=False, name="kl_weight"
        )
        self._init_trackers(seed)
        self._kl_method = None
        self._has_closed_form = None
        input_shape = known_input_shape(encoder)
        if input_shape is not None:
            self.build(input_shape)

    # ------------------------------------------------------------------ building

    def build(self, input_shape):
        if self.built:
            return
        input_shape = self._build_networks(input_shape, self.posterior_head)
        self.posterior_family.initialize_head(self.posterior_head, self.latent_dim)
        for layer in (self.prior_layer, self.likelihood_layer):
            if not layer.built:  # layers restored from a .keras file arrive built
                layer.build(input_shape)
        self._kl_method = self._resolve_kl_method()
        self.built = True

    def _resolve_kl_method(self):
        kl = self.kl
        if kl == "auto":
            kl = getattr(self.posterior_family, "KL_ESTIMATOR", None) or "auto"
        if (kl == "path" and isinstance(self.posterior_family, keras.layers.Layer)
                and not hasattr(self.posterior_family, "held_log_prob")):
            raise ValueError(
                f"kl='path' holds the posterior's parameters constant in log q(z|x), but the "
                f"{self.posterior_family.name!r} posterior has weights of its own and no "
                "held_log_prob; use kl='auto' or kl='sampled'."
            )
        if kl in ("sampled", "path"):
            return kl
        if self._closed_form_kl():
            return "analytic"
        if self.kl == "analytic":
            q = self.posterior_family.new(self._zero_params(), self.latent_dim)
            raise ValueError(
                f"kl='analytic' but tfd.kl_divergence has no closed form for "
                f"{type(q).__name__} against the {type(self.prior_layer).__name__} prior; "
                "use kl='auto' or kl='sampled'."
            )
        return "sampled"

    def _zero_params(self):
        return tf.zeros([1, self.posterior_family.params_size(self.latent_dim)])

    def _closed_form_kl(self):
        """Whether tfd.kl_divergence has a closed form for q(z|x) against the prior; probed
        once, when first needed (a family whose probe fails is not refused at build)."""
        if self._has_closed_form is None:
            q = self.posterior_family.new(self._zero_params(), self.latent_dim)
            try:
                tfd.kl_divergence(q, self.prior())
                self._has_closed_form = True
            except NotImplementedError:
                self._has_closed_form = False
        return self._has_closed_form

    @property
    def elbo_kl_method(self):
        """"analytic" where a closed form is registered, else "sampled": how ``elbo`` and
        validation compute the KL term's value, whichever estimator trains."""
        return "analytic" if self._closed_form_kl() else "sampled"

    @property
    def kl_method(self):
        """"analytic", "sampled" or "path": how the KL term is computed in training."""
        return self._kl_method

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "encoder": ser(self.encoder),
            "decoder": ser(self.decoder),
            "latent_dim": self.latent_dim,
            "posterior": posteriors_lib.serialize(self.posterior_family),
            "prior": ser(self.prior_layer),
            "likelihood": ser(self.likelihood_layer),
            "beta": self.beta,
            "kl_warmup_epochs": self.kl_warmup_epochs,
            "objective": self.objective,
            "num_train_samples": self.num_train_samples,
            "kl": self.kl,
            "seed": self.seed,
        }

    # ------------------------------------------------------------ distributions

    def posterior_params(self, x, training=False):
        """The encoder head's flat output, [B, posterior_family.params_size(D)]."""
        return self.posterior_head(self.encoder(as_float(x), training=training))

    def posterior(self, x, training=False):
        """q(z|x), batch [B], event [D]: MultivariateNormalDiag, MultivariateNormalTriL, or a
        TransformedDistribution (iaf)."""
        return self.posterior_family.new(self.posterior_params(x, training), self.latent_dim)

    def prior(self):
        """p(z), event shape [latent_dim]."""
        return self.prior_layer.distribution(posterior_fn=self.posterior)

    def decoder_outputs(self, z, training=False):
        """Decoder applied to z of any leading shape [..., D] -> [..., *S]."""
        z = as_float(z)
        flat, lead = _flatten_leading(z, 1)
        out = self.decoder(flat, training=training)
        shaped = tf.reshape(out, tf.concat([lead, tf.shape(out)[1:]], 0))
        return tf.ensure_shape(shaped, z.shape[:-1].concatenate(self._data_shape))

    def decode(self, z, training=False):
        """p(x|z): Independent Bernoulli or Normal with batch z.shape[:-1], event S."""
        return self.likelihood_layer.distribution(self.decoder_outputs(z, training))

    # ------------------------------------------------------------- quantities

    def _log_weights(self, x, num_samples, seed, training=False):
        """Samples z ~ q and returns (params, z, log p(x|z), log p(z), log q(z|x)), the last three
        [k, B]; params are the encoder head's output, q's parameters.

        z and log q(z|x) come from the family's ``reparameterize`` on standard-normal
        eps [k, B, D]: no density is evaluated by inverting the sampler.
        """
        params = self.posterior_params(x, training=training)
        eps = tf.random.stateless_normal(
            tf.stack([num_samples, tf.shape(params)[0], self.latent_dim]), seed=seed
        )
        z, log_qz = self.posterior_family.reparameterize(params, self.latent_dim, eps)
        log_px_z = self.decode(z, training=training).log_prob(x)
        return params, z, log_px_z, self.prior().log_prob(z), log_qz

    def _terms(self, x, seed, training=False, num_samples=None):
        """The loss terms. The KL term is computed by the training estimator (``kl_method``)
        when ``training``, else by ``elbo_kl_method``: no gradient is taken then, and the
        closed form, where one exists, is the same expectation without the sampling noise."""
        num_samples = num_samples or self.num_train_samples
        kl_method = self._kl_method if training else self.elbo_kl_method
        params, z, log_px_z, log_pz, log_qz = self._log_weights(x, num_samples, seed, training)
        if kl_method == "analytic":
            kl = tfd.kl_divergence(self.posterior_family.new(params, self.latent_dim), self.prior())
        elif kl_method == "path":  # same value as log_qz; gradient only through z
            family = self.posterior_family
            if hasattr(family, "held_log_prob"):  # families with weights of their own
                log_q_held = family.held_log_prob(params, self.latent_dim, z)
            else:
                log_q_held = family.new(tf.stop_gradient(params), self.latent_dim).log_prob(z)
            kl = tf.reduce_mean(log_q_held - log_pz, axis=0)
        else:
            kl = tf.reduce_mean(log_qz - log_pz, axis=0)
        distortion = -tf.reduce_mean(log_px_z, axis=0)
        terms = {"elbo": -(distortion + kl), "kl": kl, "reconstruction": distortion}
        if self.objective == "iwae":
            terms["loss"] = -_mean_exp_log(log_px_z + log_pz - log_qz)
        else:
            terms["loss"] = distortion + self.beta * self.kl_weight * kl
        return terms

    def elbo(self, x, seed=None, num_samples=1):
        """Per-example ELBO in nats, Tensor [B].

        The KL term is in closed form wherever one is registered for the (posterior, prior)
        pair, whatever ``kl_method`` trains with: "path" differs from "sampled" only in its
        gradient, and the closed form is the same expectation without the sampling noise.
        Otherwise it is sampled from the same z as the reconstruction term
        (``elbo_kl_method`` says which). Validation in ``fit`` computes it the same way.
        """
        return self._terms(as_float(x), _as_seed(seed), num_samples=num_samples)["elbo"]

    def log_likelihood(self, x, num_samples=1000, seed=0, batch_size=100, max_rows=10000):
        """Importance-sampled log p(x) per example, Tensor [B].

        log p(x) ~= log (1/k) sum_l p(x|z_l) p(z_l) / q(z_l|x),  z_l ~ q(z|x).

        With k = 1 this is a one-sample ELBO; it tightens as k grows. The k samples are
        drawn in chunks of at most ``max_rows`` decoder evaluations and combined with a
        running log-sum-exp, so memory does not grow with k.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        x = as_float(x)
        results = []
        for b, start in enumerate(range(0, int(x.shape[0]), batch_size)):
            xb = x[start : start + batch_size]
            chunk = max(1, min(num_samples, max_rows // int(xb.shape[0])))
            partial = []
            for c, s in enumerate(range(0, num_samples, chunk)):
                n = min(chunk, num_samples - s)
                chunk_seed = tf.constant([int(seed), b * 1_000_003 + c], tf.int32)
                partial.append(self._chunk_logsumexp(xb, tf.constant(n), chunk_seed))
            total = tf.reduce_logsumexp(tf.stack(partial), axis=0)
            results.append(total - math.log(num_samples))
        return tf.concat(results, axis=0)

    @tf.function(reduce_retracing=True)
    def _chunk_logsumexp(self, x, num_samples, seed):
        _, _, log_px_z, log_pz, log_qz = self._log_weights(x, num_samples, seed)
        return tf.reduce_logsumexp(log_px_z + log_pz - log_qz, axis=0)

    def log_likelihood_from_seeds(self, x, seeds, num_samples):
        """(log_likelihood, elbo), each [B]; row i uses only its own seed row.

        The serving form of ``log_likelihood``: k = ``num_samples`` posterior draws per
        row, from noise eps keyed by that row's seed (``philox.row_normal``, stream
        ``POSTERIOR``) pushed through ``posterior_family.reparameterize``; ``elbo`` is
        the mean of the same log weights. No loop over rows.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        params = self.posterior_params(x)
        eps = philox.row_normal(seeds, [num_samples, self.latent_dim], POSTERIOR)  # [B, k, D]
        eps = tf.transpose(eps, [1, 0, 2])  # [k, B, D]
        z, log_qz = self.posterior_family.reparameterize(params, self.latent_dim, eps)
        log_w = self.decode(z).log_prob(x) + self.prior().log_prob(z) - log_qz
        return _mean_exp_log(log_w), tf.reduce_mean(log_w, axis=0)

    def encode(self, x):
        """The family's location of q(z|x), [B, D]: E_q[z] for diag and tril; for iaf the
        flow applied to the base mean (z at eps = 0)."""
        return self.posterior_family.location(self.posterior_params(x), self.latent_dim)

    def reconstruct(self, x):
        """Mean of p(x|z) at the posterior mean, [B, *S]."""
        return self.likelihood_layer.mean(self.decoder_outputs(self.encode(x)))

    def decode_mean(self, z):
        """Mean of p(x|z), [B, *S]."""
        return self.likelihood_layer.mean(self.decoder_outputs(z))

    @tf.function(reduce_retracing=True)
    def generate(self, seeds):
        """{"x": mean of p(x|z), "z": z ~ p(z)} with one sample per seed row ([B, 2] int32).

        z for a seed row is bit-identical in any batch; x agrees across batch sizes
        within float32 rounding of the decoder (see ``row_sampling``).
        """
        z = sample_rows(self.prior(), seeds)
        return {"x": self.decode_mean(z), "z": z}

    def sample(self, num_samples, seed=0):
        """Decoded means of ``num_samples`` prior draws; draw i uses seed row (seed, i)."""
        return self.generate(seed_rows(seed, 0, num_samples))["x"]

    def call(self, x, training=False):
        return self.reconstruct(x)

    # ----------------------------------------------------------------- Keras

    def fit(self, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        steps_per_execution = getattr(self, "steps_per_execution", 1) or 1
        if self.kl_warmup_epochs and steps_per_execution > 1:
            # Batch callbacks run once per execution, so the per-step ramp would stall.
            raise ValueError(
                f"kl_warmup_epochs={self.kl_warmup_epochs} ramps the KL weight every training "
                f"step and needs steps_per_execution=1; the model was compiled with "
                f"steps_per_execution={steps_per_execution}."
            )
        if self.kl_warmup_epochs and not any(isinstance(c, KLWarmup) for c in callbacks):
            callbacks.append(KLWarmup(self.kl_warmup_epochs))
        return super().fit(*args, callbacks=callbacks, **kwargs)


class KLWarmup(keras.callbacks.Callback):
    """Ramps ``model.kl_weight`` linearly from 0 to 1 over ``epochs`` epochs, per batch."""

    def __init__(self, epochs):
        super().__init__()
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
        self.epochs = epochs
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps = (self.params or {}).get("steps") or 0
        progress = self._epoch + (batch / steps if steps else 0.0)
        self.model.kl_weight.assign(min(1.0, progress / self.epochs))


def _mean_exp_log(log_w):
    """log (1/k) sum_l exp(log_w[l]) along axis 0."""
    k = tf.cast(tf.shape(log_w)[0], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(k)


def _as_seed(seed):
    if seed is None:
        return tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int32)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.convert_to_tensor(seed, tf.int32)
