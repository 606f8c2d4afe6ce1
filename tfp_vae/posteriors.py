"""Gaussian posterior families q(z|x).

A posterior family is pure functions, in the spirit of TFP's distribution layers:
``params_size(latent_dim)`` says how many numbers the encoder head must emit,
``new(params, latent_dim)`` turns those numbers into a ``tfd`` distribution, and
``reparameterize(params, latent_dim, eps)`` maps standard-normal noise eps [..., B, D]
(broadcasting against params [B, P]) to ``(z, log_q)``: z [..., B, D] and
log_q [..., B] = log q(z|x), computed from eps without inverting anything. The
encoder is an ordinary Keras layer that outputs a tensor; the distribution is built
outside it, so the same code serves training, export and evaluation.

Families:

``diag``
    (mu, raw) = e(x);  sigma = softplus(raw) + floor;  q = N(mu, diag sigma^2)
    (``tfd.MultivariateNormalDiag``). z = mu + sigma * eps,
    log q = sum_i log N(eps_i; 0, 1) - sum_i log sigma_i. Trained, like tril and iaf,
    with the path-derivative gradient of the KL term (``KL_ESTIMATOR = "path"``);
    ``VAE(kl="analytic")`` trains with the source's closed form, whose value
    ``VAE.elbo`` reports either way.
``tril_source``
    The source's Algorithm 2 exactly: (mu, log sigma, L') = e(x);
    L = L_mask * L' + diag(sigma), with L_mask strictly lower triangular;
    q = N(mu, L L^T) (``tfd.MultivariateNormalTriL``). Then z = mu + L eps and
    log|det dz/deps| = sum_i log sigma_i, so log q has the same form as for ``diag``.
``tril`` (the default full-covariance family)
    The same construction with four changes, each measured: sigma = softplus(raw) + floor
    as in ``diag``; the off-diagonal part damped, L = L_mask * (0.01 L') + diag(sigma);
    the mu and sigma head weights started as the very weights a ``diag`` model built in
    the same random state gets (L' at zero, so q starts as that diagonal posterior); and
    the KL term sampled with the path-derivative gradient (``KL_ESTIMATOR = "path"``, the
    VAE's ``kl="path"``): log q(z|x) is evaluated with q's parameters held constant, so
    the off-diagonal gradient eps_j (grad_z log p(x, z) - grad_z log q(z))_i loses the
    part of its noise that q already explains, and vanishes sample by sample where q is
    the exact posterior (Roeder et al., 2017). Under Adam, whose step does not depend
    on the gradient's scale, the damping divides the effective learning rate of L' by 100.
``iaf``
    A ``diag`` base pushed through inverse autoregressive steps (``InverseAutoregressiveFlow``),
    2 steps of a 256-unit MADE, KL sampled with the path-derivative gradient too
    (``held_log_prob`` inverts the flow with its weights held constant).

These screens ran when diag, tril and the tril_<c> and soft* candidates trained with the
closed-form KL, unless named path-; to repeat such a row now, prefix the candidate with
analytic- (analytic-diag). The damped_, rowscaled_, matched_ and detached_ candidates and
tril_source still train with the closed form.

Why (bench/screen_tril.py: mnist5k, MLP 512-256, latent 16, 30 epochs, seed 0, k = 1000
on the first 300 test digits; log p(x) in nats): diag with sigma = exp(log sigma) -111.96,
with softplus -111.03; the source's construction -122.56; damping 0.1 / 0.03 -116.67 /
-115.37; diag-matched head start with damping 1 / 0.1 / 0.03 / 0.01: -119.00 / -115.23 /
-114.32 / -113.26; sigma-relative off-diagonals diag(sigma)(I + c L_mask * L'), c = 1 /
0.1: -120.70 / -115.47; cutting the L' head's gradient into the encoder (damping 1 / 0.1
/ 0.03): -115.76 / -115.26 / -115.10; softplus sigma with the matched start and damping
1 / 0.01: -117.15 / -111.30. Every full covariance trailed the diagonal posterior with the
same sigma, and the less L' moved the smaller the gap: the off-diagonal terms that the
single-sample ELBO gradient teaches widen the posterior (mean marginal sd 0.70 against
0.38 at 100 epochs for the source's construction) and the model underfits, on training
as on test data. The softplus scale (what tfp.layers uses) helped every family.

Second screen (bench/screen_tril.py, same budget but 10 epochs, k = 200 on the first
500 test digits; log p(x), nats; "path-" = kl="path"; tril here already starts with the
diag head's very weights):

  python screen_tril.py --epochs 10 --test-examples 500 --num-samples 200 --seeds S --candidates ...

                        seed 0    seed 1
  diag                 -133.01   -133.70
  path-diag            -131.90   -133.40
  tril (0.01)          -131.95   -132.05
  path-tril_0.01       -131.28   -132.13
  path-tril_0.1        -132.06
  path-tril_1          -134.24
  iaf (2 x 128)        -135.58
  iaf_4x128            -134.72
  iaf_2x256            -133.65
  iaf_2x128, gate 1    -135.52
  iaf_4x256            -134.54
  path-iaf_2x128       -131.50
  path-iaf_2x256       -131.23   -131.45

The path-derivative gradient helped every family, the flow most (+4 nats at 2 x 128);
undamped off-diagonals still cost likelihood with it (path-tril_1). A wider MADE helped
more than more steps.

Confirmation at the full budget (30 epochs, seeds 0 1 2, k = 1000 on all 1,000 test digits;
one bench/bench_quality.py process per seed, run side by side, tables in bench/results/):

  python bench_quality.py --epochs 30 --seeds S --only diag/normal diag+analytic/normal \
      tril/normal iaf/normal --peers IndependentNormal --json results/quality_seedS.json

  diag (path-derivative KL, the default) -109.08 (sd 0.45); diag+analytic (the closed
  form) -109.94 (0.57), dLL -0.69 -1.48 -0.43; tril -108.95 (0.44), dLL -0.31 +0.51
  +0.17; iaf -108.58 (0.23), dLL +0.06 +0.67 +0.76; tfp.layers IndependentNormal
  -109.79 (0.39). At 100 epochs (README, Benchmarks) iaf is ahead of diag on every seed
  and tril by 0.53 by the mean, on four of five seeds. That the path-derivative gradient
  beat the closed form for diag too is why diag uses it by default (``KL_ESTIMATOR``).

The floor is exp(MIN_LOG_SCALE) (``_backend.softplus_scale``); ``tril_source`` keeps the
source's log sigma through ``_backend.bounded_scale``.
"""

import math

import numpy as np

from tfp_vae._backend import bounded_scale, keras, softplus_scale, tf, tfb, tfd

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def standard_normal_log_prob(eps):
    """sum_i log N(eps_i; 0, 1) over the last axis."""
    return tf.reduce_sum(-0.5 * tf.square(eps) - _HALF_LOG_2PI, axis=-1)


class DiagonalGaussian:
    """Factorized Gaussian posterior N(mu, diag sigma^2), sigma = softplus(raw) + floor."""

    name = "diag"
    SCALE = staticmethod(softplus_scale)  # raw network output -> sigma
    # The VAE's kl="auto": sampled KL, path-derivative gradient. On mnist5k's MLP
    # (bench/bench_quality.py) it beat the closed form by 0.87 nats of test log p(x) at 30
    # epochs (every one of 3 seeds) and 0.72 at 100 (4 of 5 seeds).
    KL_ESTIMATOR = "path"

    @staticmethod
    def params_size(latent_dim):
        return 2 * latent_dim

    @classmethod
    def bind(cls, latent_dim):
        """The family for a model of latent size ``latent_dim``: itself (it has no weights)."""
        return cls

    @staticmethod
    def initialize_head(head, latent_dim):
        """Adjusts the freshly built Dense head that emits the parameters (nothing to do)."""

    @staticmethod
    def location(params, latent_dim):
        """The encoding of x: mu, the posterior mean."""
        return params[..., :latent_dim]

    @classmethod
    def _loc_scale(cls, params, latent_dim):
        loc, raw_scale = tf.split(params, [latent_dim, latent_dim], axis=-1)
        return loc, cls.SCALE(raw_scale)

    @classmethod
    def new(cls, params, latent_dim):
        loc, scale = cls._loc_scale(params, latent_dim)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)

    @classmethod
    def encoding(cls, params, latent_dim):
        """(loc, scale_tril) of q, [B, D] and [B, D, D]: mu and diag(sigma)."""
        loc, scale = cls._loc_scale(params, latent_dim)
        return loc, tf.linalg.diag(scale)

    @classmethod
    def reparameterize(cls, params, latent_dim, eps):
        """z = mu + sigma * eps;  log q(z|x) = sum log N(eps; 0, 1) - sum log sigma."""
        loc, scale = cls._loc_scale(params, latent_dim)
        z = loc + scale * eps
        log_q = standard_normal_log_prob(eps) - tf.reduce_sum(tf.math.log(scale), axis=-1)
        return z, log_q


class FullCovarianceGaussian:
    """Full-covariance Gaussian posterior built as in the source's Algorithm 2.

    ``OFFDIAG_SCALE`` multiplies L' before it is masked; 1 is the source's construction.
    """

    name = "tril_source"
    OFFDIAG_SCALE = 1.0
    SCALE = staticmethod(bounded_scale)  # the source's log sigma: sigma = exp(log sigma)

    @staticmethod
    def params_size(latent_dim):
        return 2 * latent_dim + latent_dim * latent_dim

    @classmethod
    def bind(cls, latent_dim):
        return cls

    location = staticmethod(DiagonalGaussian.location)

    @staticmethod
    def initialize_head(head, latent_dim):
        """Zeroes the head weights that emit L', so q starts out diagonal.

        With the Dense layer's random initial weights, L' starts at |L'| ~ 0.2 and adds
        correlated noise to z from the first step; on held-out mnist5k that cost
        ~8 nats of log-likelihood at equal budget (bench/bench_quality.py).
        """
        n = 2 * latent_dim
        kernel = head.kernel
        kernel.assign(tf.concat([kernel[:, :n], tf.zeros_like(kernel[:, n:])], axis=1))

    @classmethod
    def scale_tril(cls, log_scale, l_prime):
        """L = L_mask * (OFFDIAG_SCALE L') + diag(SCALE(log_scale)), L_mask strictly lower ones."""
        latent_dim = log_scale.shape[-1]
        mask = tf.constant(
            [[1.0 if j < i else 0.0 for j in range(latent_dim)] for i in range(latent_dim)],
            dtype=l_prime.dtype,
        )
        if cls.OFFDIAG_SCALE != 1.0:
            l_prime = cls.OFFDIAG_SCALE * l_prime
        return mask * l_prime + tf.linalg.diag(cls.SCALE(log_scale))

    @classmethod
    def _loc_scale_tril(cls, params, latent_dim):
        d = latent_dim
        loc, log_scale, flat = tf.split(params, [d, d, d * d], axis=-1)
        l_prime = tf.reshape(flat, tf.concat([tf.shape(flat)[:-1], [d, d]], axis=0))
        return loc, cls.scale_tril(log_scale, l_prime)

    @classmethod
    def new(cls, params, latent_dim):
        loc, scale_tril = cls._loc_scale_tril(params, latent_dim)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    @classmethod
    def encoding(cls, params, latent_dim):
        """(loc, scale_tril) of q, [B, D] and [B, D, D]: mu and L."""
        return cls._loc_scale_tril(params, latent_dim)

    @classmethod
    def reparameterize(cls, params, latent_dim, eps):
        """z = mu + L eps;  log q(z|x) = sum log N(eps; 0, 1) - sum log sigma (L's diagonal)."""
        loc, scale_tril = cls._loc_scale_tril(params, latent_dim)
        z = loc + tf.linalg.matvec(scale_tril, eps)
        log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril)), axis=-1)
        return z, standard_normal_log_prob(eps) - log_det


class DampedFullCovarianceGaussian(FullCovarianceGaussian):
    """The default full covariance: L = L_mask * (0.01 L') + diag(sigma), started as ``diag`` is.

    See the module docstring; bench/screen_tril.py holds the screen that chose it.
    """

    name = "tril"
    OFFDIAG_SCALE = 0.01
    SCALE = staticmethod(softplus_scale)  # as the diag family's
    KL_ESTIMATOR = "path"  # the VAE's kl="auto": sampled KL, path-derivative gradient

    @staticmethod
    def initialize_head(head, latent_dim):
        """Starts mu and log sigma exactly as the diag family's head does, and L' at zero.

        Keras' Glorot initializer scales a Dense kernel by sqrt(6 / (fan_in + fan_out)); the
        full-covariance head has D^2 more outputs than the diagonal one, so left alone its
        mu and log sigma columns would start ~30% smaller (D = 16, 256 features).
        The columns are drawn with the head initializer's own seed and the diag head's
        shape, so they are the very weights a diag model built in the same state gets
        (and no extra draw shifts the random state of what is built after the head).
        """
        n = 2 * latent_dim
        kernel = head.kernel
        init = head.kernel_initializer
        seed = getattr(init, "seed", None)
        start = type(init)(seed=seed)((kernel.shape[0], n)) if isinstance(seed, int) else init((kernel.shape[0], n))
        kernel.assign(tf.concat([start, tf.zeros_like(kernel[:, n:])], axis=1))


# ---------------------------------------------------------------- inverse autoregressive flow


def made_degrees(latent_dim, hidden_units):
    """MADE degrees (Germain et al., 2015): inputs 1..D, hidden units cycling 1..D-1.

    An output of degree d may depend on inputs of degree < d only: hidden unit k sees
    input i when degree(k) >= i, output j sees hidden unit k when j > degree(k).
    With D = 1 the hidden units have degree 0 and see no input.
    """
    inputs = np.arange(1, latent_dim + 1)
    if latent_dim == 1:
        hidden = np.zeros(hidden_units, np.int64)
    else:
        hidden = np.arange(hidden_units) % (latent_dim - 1) + 1
    return inputs, hidden


@keras.saving.register_keras_serializable(package="tfp_vae")
class AutoregressiveNetwork(keras.layers.Layer):
    """A conditional MADE: (z [..., B, D], context [B, C]) -> (shift, pre_gate), each [..., B, D].

    One masked hidden layer, ReLU, which also reads the context; the context reaches the
    outputs directly too, so output i depends on z_1..z_{i-1} and on the context
    (strictly autoregressive in z; the first output on the context alone). The output
    weights start at zero, so shift starts at 0 and pre_gate at ``gate_bias``.
    """

    def __init__(self, latent_dim, hidden_units=128, gate_bias=2.0, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("latent_dim", latent_dim), ("hidden_units", hidden_units)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        gate_bias = float(gate_bias)
        if not np.isfinite(gate_bias):
            raise ValueError(f"gate_bias must be finite, got {gate_bias!r}.")
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        self.gate_bias = gate_bias
        inputs, hidden = made_degrees(latent_dim, hidden_units)
        self._input_mask = (hidden[None, :] >= inputs[:, None]).astype(np.float32)  # [D, H]
        out = np.concatenate([inputs, inputs])  # shift and gate share the degrees 1..D
        self._output_mask = (out[None, :] > hidden[:, None]).astype(np.float32)  # [H, 2D]

    def build(self, z_shape, context_shape):
        d, h = self.latent_dim, self.hidden_units
        self.input_kernel = self.add_weight(shape=(d, h), initializer="glorot_uniform", name="input_kernel")
        self.context_kernel = self.add_weight(
            shape=(int(context_shape[-1]), h), initializer="glorot_uniform", name="context_kernel"
        )
        self.hidden_bias = self.add_weight(shape=(h,), initializer="zeros", name="hidden_bias")
        self.output_kernel = self.add_weight(shape=(h, 2 * d), initializer="zeros", name="output_kernel")
        self.context_output_kernel = self.add_weight(
            shape=(int(context_shape[-1]), 2 * d), initializer="zeros", name="context_output_kernel"
        )
        bias = np.concatenate([np.zeros(d), np.full(d, self.gate_bias)]).astype(np.float32)
        self.output_bias = self.add_weight(
            shape=(2 * d,), initializer=keras.initializers.Constant(bias), name="output_bias"
        )

    def call(self, z, context, held=False):
        """(shift, pre_gate); with ``held`` the weights are constants to the gradient (z is not)."""
        w = [self.input_kernel, self.context_kernel, self.hidden_bias, self.output_kernel,
             self.context_output_kernel, self.output_bias]
        if held:
            w = [tf.stop_gradient(v) for v in w]
        w_in, w_ctx, b_hidden, w_out, w_ctx_out, b_out = w
        hidden = tf.nn.relu(
            tf.linalg.matmul(z, w_in * self._input_mask)
            + tf.tensordot(context, w_ctx, axes=1)
            + b_hidden
        )
        out = (
            tf.linalg.matmul(hidden, w_out * self._output_mask)
            + tf.tensordot(context, w_ctx_out, axes=1)
            + b_out
        )
        return tf.split(out, 2, axis=-1)

    def jacobian(self, z, context):
        """(d shift / d z, d pre_gate / d z), each [..., B, D, D] (output i, input j), in closed form."""
        pre = (
            tf.linalg.matmul(z, self.input_kernel * self._input_mask)
            + tf.tensordot(context, self.context_kernel, axes=1)
            + self.hidden_bias
        )
        active = tf.cast(pre > 0, z.dtype)  # relu' [..., H]
        w_in = self.input_kernel * self._input_mask  # [D, H]
        w_out = self.output_kernel * self._output_mask  # [H, 2D]
        jac = tf.einsum("ho,...h,jh->...oj", w_out, active, w_in)  # [..., 2D, D]
        return tf.split(jac, 2, axis=-2)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "hidden_units": self.hidden_units, "gate_bias": self.gate_bias}


class _IAFStep(tfb.Bijector):
    """z' = g * z + (1 - g) * m with (m, s) = MADE(z, context), g = sigmoid(s).

    The forward pass is one network evaluation; the inverse needs D (one coordinate
    per pass). log|det dz'/dz| = sum_i log g_i, the Jacobian being triangular.
    """

    def __init__(self, network, context, name="iaf_step"):
        parameters = dict(locals())
        self._network = network
        self._context = context
        super().__init__(forward_min_event_ndims=1, parameters=parameters, name=name)

    def _gate_shift(self, z):
        shift, pre_gate = self._network(z, self._context)
        return tf.math.log_sigmoid(pre_gate), shift

    def _forward(self, z):
        log_gate, shift = self._gate_shift(z)
        gate = tf.exp(log_gate)
        return gate * z + (1.0 - gate) * shift

    def _inverse(self, y):
        z = tf.zeros_like(y)
        for _ in range(self._network.latent_dim):  # coordinate i is exact after pass i
            log_gate, shift = self._gate_shift(z)
            gate = tf.exp(log_gate)
            z = (y - (1.0 - gate) * shift) / gate
        return z

    def _forward_log_det_jacobian(self, z):
        return tf.reduce_sum(self._gate_shift(z)[0], axis=-1)


@keras.saving.register_keras_serializable(package="tfp_vae")
class InverseAutoregressiveFlow(keras.layers.Layer):
    """Posterior family ``iaf``: a diagonal Gaussian pushed through IAF steps (Kingma et al., 2016).

    The encoder head emits (mu, log sigma, h): h [B, context_size] is the context every
    step reads. With z_0 = mu + sigma * eps and, for t = 1..T,

        (m_t, s_t) = MADE_t(z_{t-1}, h),  g_t = sigmoid(s_t),  z_t = g_t z_{t-1} + (1 - g_t) m_t,

    (every other step reading z in reversed order), z = z_T and

        log q(z|x) = sum log N(eps; 0, 1) - sum log sigma - sum_t sum_i log g_{t,i}.

    ``reparameterize`` computes that from eps with one network pass per step; ``new``
    returns the same distribution as a ``tfd.TransformedDistribution`` (its
    ``log_prob`` of an arbitrary z inverts every step, D passes each; its ``mean`` is
    not available in closed form). ``location`` is z at eps = 0, the flow's image of the
    base mean, which is what ``VAE.encode`` returns. The KL term is always sampled; by
    default (``KL_ESTIMATOR``) with the path-derivative gradient, through ``held_log_prob``.
    Every step starts as z -> sigmoid(gate_bias) z (zero output weights), so q starts as a
    diagonal Gaussian, N(c mu, c^2 sigma^2) with c = sigmoid(gate_bias)^T.

    Unlike the Gaussian families this one has weights (the MADE networks); the VAE
    tracks it as a layer and saves it with the model.
    """

    KL_ESTIMATOR = "path"  # the VAE's kl="auto": sampled KL, path-derivative gradient

    def __init__(self, latent_dim=None, num_steps=2, hidden_units=256, context_size=32,
                 gate_bias=2.0, **kwargs):
        kwargs.setdefault("name", "iaf")  # the family's name, as the Gaussian families have
        super().__init__(**kwargs)
        for arg, value in (("num_steps", num_steps), ("hidden_units", hidden_units),
                           ("context_size", context_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        if latent_dim is not None and (not isinstance(latent_dim, int) or latent_dim <= 0):
            raise ValueError(f"latent_dim must be a positive integer or None, got {latent_dim!r}.")
        self.latent_dim = latent_dim
        self.num_steps = num_steps
        self.hidden_units = hidden_units
        self.context_size = context_size
        self.gate_bias = float(gate_bias)
        self.networks = []
        if latent_dim is not None:
            self._make_networks()

    def _make_networks(self):
        self.networks = [
            AutoregressiveNetwork(self.latent_dim, self.hidden_units, self.gate_bias, name=f"made_{t}")
            for t in range(self.num_steps)
        ]

    def bind(self, latent_dim):
        """This family for a model with latent size ``latent_dim`` (creates the networks)."""
        if self.latent_dim is None:
            self.latent_dim = latent_dim
            self._make_networks()
        elif self.latent_dim != latent_dim:
            raise ValueError(f"The iaf posterior has latent_dim={self.latent_dim} but the model "
                             f"has latent_dim={latent_dim}.")
        return self

    def build(self, input_shape=None):
        for network in self.networks:
            if not network.built:
                network.build((None, self.latent_dim), (None, self.context_size))
        self.built = True

    def params_size(self, latent_dim):
        return 2 * latent_dim + self.context_size

    def initialize_head(self, head, latent_dim):
        """Builds the MADE networks (the head needs no change: the flow starts at the identity)."""
        self.build()

    def _split(self, params, latent_dim):
        loc, log_scale, context = tf.split(params, [latent_dim, latent_dim, self.context_size], axis=-1)
        return loc, softplus_scale(log_scale), context

    def _flow(self, z, context):
        """(z_T, sum_t sum_i log g_t) from z_0; odd steps run on z in reversed order."""
        log_det = tf.zeros_like(z[..., 0])
        for t, network in enumerate(self.networks):
            if t % 2:
                z = tf.reverse(z, axis=[-1])
            shift, pre_gate = network(z, context)
            log_gate = tf.math.log_sigmoid(pre_gate)
            gate = tf.exp(log_gate)
            z = gate * z + (1.0 - gate) * shift
            if t % 2:
                z = tf.reverse(z, axis=[-1])
            log_det += tf.reduce_sum(log_gate, axis=-1)
        return z, log_det

    def reparameterize(self, params, latent_dim, eps):
        loc, scale, context = self._split(params, latent_dim)
        z, log_det = self._flow(loc + scale * eps, context)
        base = standard_normal_log_prob(eps) - tf.reduce_sum(tf.math.log(scale), axis=-1)
        return z, base - log_det

    def held_log_prob(self, params, latent_dim, z):
        """log q(z|x) [..., B] with every parameter of q held constant: the encoder's output
        and the MADE weights reach the gradient only through z.

        What ``kl="path"`` needs (the path-derivative estimator, Roeder et al., 2017): each
        step is inverted, D network passes, the first i coordinates exact after pass i, so
        the composition is the exact inverse as a function of z and its derivative is too.
        """
        loc, scale, context = (tf.stop_gradient(t) for t in self._split(params, latent_dim))
        y, log_det = z, tf.zeros_like(z[..., 0])
        for t in reversed(range(len(self.networks))):
            network = self.networks[t]
            if t % 2:
                y = tf.reverse(y, axis=[-1])
            x = tf.zeros_like(y)
            for _ in range(latent_dim):
                shift, pre_gate = network(x, context, held=True)
                gate = tf.sigmoid(pre_gate)
                x = (y - (1.0 - gate) * shift) / gate
            log_det += tf.reduce_sum(tf.math.log_sigmoid(network(x, context, held=True)[1]), axis=-1)
            y = tf.reverse(x, axis=[-1]) if t % 2 else x
        eps = (y - loc) / scale
        return standard_normal_log_prob(eps) - tf.reduce_sum(tf.math.log(scale), axis=-1) - log_det

    def encoding(self, params, latent_dim):
        """(loc, scale_tril), [B, D] and [B, D, D]: the flow linearized at eps = 0.

        loc = z(0), the flow applied to the base mean (``location``); scale_tril is the
        Cholesky factor of J J^T with J = dz/deps at eps = 0, so N(loc, J J^T) is the
        Gaussian the flow's first-order expansion around the base mean gives. It is
        computed in closed form from the MADE weights (no autodiff in the graph).
        """
        loc, scale, context = self._split(params, latent_dim)
        z = loc
        jac = tf.linalg.diag(scale)  # dz_0 / deps
        flip = tf.reverse(tf.eye(latent_dim, dtype=z.dtype), axis=[-1])
        for t, network in enumerate(self.networks):
            if t % 2:
                z, jac = tf.reverse(z, axis=[-1]), tf.linalg.matmul(flip, jac)
            shift, pre_gate = network(z, context)
            d_shift, d_pre = network.jacobian(z, context)
            gate = tf.exp(tf.math.log_sigmoid(pre_gate))  # as _flow computes it, to the last bit
            # z' = g z + (1 - g) m:  dz'/dz = diag(g) + (z - m) g (1 - g) dpre/dz + (1 - g) dm/dz
            step = (tf.linalg.diag(gate)
                    + ((z - shift) * gate * (1.0 - gate))[..., :, None] * d_pre
                    + (1.0 - gate)[..., :, None] * d_shift)
            z = gate * z + (1.0 - gate) * shift
            jac = tf.linalg.matmul(step, jac)
            if t % 2:
                z, jac = tf.reverse(z, axis=[-1]), tf.linalg.matmul(flip, jac)
        return z, tf.linalg.cholesky(tf.linalg.matmul(jac, jac, transpose_b=True))

    def location(self, params, latent_dim):
        """z at eps = 0: the flow applied to the base mean mu (not E_q[z])."""
        loc, _, context = self._split(params, latent_dim)
        return self._flow(loc, context)[0]

    def new(self, params, latent_dim):
        loc, scale, context = self._split(params, latent_dim)
        reverse = tfb.Permute(permutation=list(range(latent_dim - 1, -1, -1)))
        steps = []  # in the order they apply; tfb.Chain applies its last bijector first
        for t, network in enumerate(self.networks):
            step = _IAFStep(network, context, name=f"iaf_step_{t}")
            steps += [reverse, step, reverse] if t % 2 else [step]
        return tfd.TransformedDistribution(
            distribution=tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale),
            bijector=tfb.Chain(list(reversed(steps))),
            name="IAFPosterior",
        )

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_steps": self.num_steps,
                "hidden_units": self.hidden_units, "context_size": self.context_size,
                "gate_bias": self.gate_bias}


_FAMILIES = {
    "diag": DiagonalGaussian,
    "tril": DampedFullCovarianceGaussian,
    "tril_source": FullCovarianceGaussian,
    "iaf": InverseAutoregressiveFlow,  # a layer class: one instance (with weights) per model
}


def get(name):
    """The posterior family for ``name`` (see ``names()``), or ``name`` itself if it is a family layer.

    Families with weights (``iaf``) come back as a new, unbound instance; call
    ``bind(latent_dim)`` on whatever this returns.
    """
    if isinstance(name, keras.layers.Layer) and hasattr(name, "reparameterize"):
        return name
    if isinstance(name, str) and name in _FAMILIES:
        family = _FAMILIES[name]
        return family() if isinstance(family, type) and issubclass(family, keras.layers.Layer) else family
    raise ValueError(f"Unknown posterior {name!r}; expected one of {sorted(_FAMILIES)}.")


def serialize(family):
    """What a model config stores: the name of a weightless family, the config of a layer."""
    if isinstance(family, keras.layers.Layer):
        return keras.saving.serialize_keras_object(family)
    return family.name


def register(family):
    """Adds a family (name, bind, params_size, initialize_head, location, new, reparameterize)."""
    _FAMILIES[family.name] = family
    return family


def names():
    return sorted(_FAMILIES)
