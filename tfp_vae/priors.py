"""Priors p(z) over the latent space.

A prior is a Keras layer (so its parameters train with the model and round-trip
through ``.keras`` files) whose ``distribution(posterior_fn)`` returns a ``tfd``
distribution with event shape [latent_dim]. ``posterior_fn`` maps inputs to the
posterior q(z|x); only the VampPrior uses it.

Whether KL(q || p) has a closed form is not a property a prior declares: the model
asks ``tfd.kl_divergence`` (``VAE.elbo_kl_method``) and samples the KL's value where no
closed form is registered (mixtures).
"""

from tfp_vae._backend import bounded_scale, keras, tf, tfd


class Prior(keras.layers.Layer):
    """Base class: a layer that owns the prior's parameters."""

    def __init__(self, latent_dim=None, **kwargs):
        super().__init__(**kwargs)
        if latent_dim is not None and (not isinstance(latent_dim, int) or latent_dim <= 0):
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
        self.latent_dim = latent_dim

    def build(self, input_shape):
        """``input_shape`` is the data shape (batch dimension first)."""
        if self.latent_dim is None:
            raise ValueError(f"{type(self).__name__} needs latent_dim before it is built.")
        self.built = True

    def call(self, inputs=None):
        raise TypeError(
            f"{type(self).__name__} is not called on tensors; use .distribution() instead."
        )

    def distribution(self, posterior_fn=None):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="tfp_vae")
class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def distribution(self, posterior_fn=None):
        zeros = tf.zeros([self.latent_dim])
        return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros))


@keras.saving.register_keras_serializable(package="tfp_vae")
class MixtureOfGaussians(Prior):
    """Learnable mixture of K diagonal Gaussians: p(z) = sum_k pi_k N(mu_k, diag s_k^2).

    Mixture weights (as logits), means and log-scales are all trained. Means start
    spread out (unit normal draws times ``init_spread``) so the components do not start
    on top of one another.
    """

    def __init__(self, num_components=10, latent_dim=None, init_spread=1.0, seed=0, **kwargs):
        super().__init__(latent_dim=latent_dim, **kwargs)
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components must be a positive integer, got {num_components!r}.")
        self.num_components = num_components
        self.init_spread = float(init_spread)
        self.seed = seed

    def build(self, input_shape):
        super().build(input_shape)
        k, d = self.num_components, self.latent_dim
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")
        self.means = self.add_weight(
            shape=(k, d),
            initializer=keras.initializers.RandomNormal(stddev=self.init_spread, seed=self.seed),
            name="means",
        )
        self.log_scales = self.add_weight(shape=(k, d), initializer="zeros", name="log_scales")

    def distribution(self, posterior_fn=None):
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=self.logits),
            components_distribution=tfd.MultivariateNormalDiag(
                loc=self.means, scale_diag=bounded_scale(self.log_scales)
            ),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "init_spread": self.init_spread,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="tfp_vae")
class VampPrior(Prior):
    """VampPrior: p(z) = (1/K) sum_k q(z | u_k), K learnable pseudo-inputs u_k.

    Pseudo-inputs live in data space; they are stored unconstrained and squashed by a
    sigmoid, so they stay in [0, 1] like the (scaled) data.
    """

    def __init__(self, num_pseudo_inputs=50, latent_dim=None, seed=0, **kwargs):
        super().__init__(latent_dim=latent_dim, **kwargs)
        if not isinstance(num_pseudo_inputs, int) or num_pseudo_inputs < 1:
            raise ValueError(
                f"num_pseudo_inputs must be a positive integer, got {num_pseudo_inputs!r}."
            )
        self.num_pseudo_inputs = num_pseudo_inputs
        self.seed = seed

    def build(self, input_shape):
        super().build(input_shape)
        data_shape = tuple(input_shape[1:])
        if not data_shape or any(s is None for s in data_shape):
            raise ValueError(f"VampPrior needs a fully known data shape, got {tuple(input_shape)}.")
        self.pseudo_logits = self.add_weight(
            shape=(self.num_pseudo_inputs, *data_shape),
            initializer=keras.initializers.RandomNormal(stddev=0.1, seed=self.seed),
            name="pseudo_logits",
        )

    def pseudo_inputs(self):
        return tf.sigmoid(self.pseudo_logits)

    def distribution(self, posterior_fn=None):
        if posterior_fn is None:
            raise ValueError("VampPrior.distribution needs the model's posterior_fn.")
        q_u = posterior_fn(self.pseudo_inputs())  # batch [K], event [D]
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_pseudo_inputs])),
            components_distribution=q_u,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_pseudo_inputs": self.num_pseudo_inputs,
            "seed": self.seed,
        }


_PRIORS = {"normal": StandardNormal, "mog": MixtureOfGaussians, "vamp": VampPrior}


def get(identifier, **kwargs):
    """A prior from a name ("normal", "mog", "vamp"), a Prior instance, or None (normal)."""
    if identifier is None:
        return StandardNormal(**kwargs)
    if isinstance(identifier, Prior):
        return identifier
    if isinstance(identifier, str) and identifier in _PRIORS:
        return _PRIORS[identifier](**kwargs)
    raise ValueError(
        f"Unknown prior {identifier!r}; expected one of {sorted(_PRIORS)}, None, "
        "or a tfp_vae.priors.Prior instance."
    )


def names():
    return sorted(_PRIORS)
