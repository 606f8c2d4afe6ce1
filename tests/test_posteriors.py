"""Every posterior family's reparameterize against its distribution and hand formulas,
and the inverse autoregressive flow's mathematics."""

import math

import numpy as np
import pytest

import tfp_vae
from tfp_vae import posteriors
from tfp_vae._backend import MIN_LOG_SCALE, bounded_scale, keras, tf, tfd

RNG = np.random.default_rng(11)
D, B = 3, 4


def bound(name, latent_dim=D):
    family = posteriors.get(name).bind(latent_dim)
    family.initialize_head(None, latent_dim) if name == "iaf" else None
    return family


def random_params(family, batch=B, latent_dim=D, scale=0.4):
    return tf.constant(scale * RNG.normal(size=(batch, family.params_size(latent_dim))), tf.float32)


def randomize_weights(layer, scale=0.3):
    for w in layer.weights:
        w.assign(scale * RNG.normal(size=w.shape).astype(np.float32))


def softplus_scale(raw):
    """sigma of diag, tril and the iaf base, by hand: log(1 + e^raw) + exp(MIN_LOG_SCALE)."""
    return np.logaddexp(0.0, np.asarray(raw, np.float64)) + math.exp(MIN_LOG_SCALE)


def log_std_normal(eps):
    return np.sum(-0.5 * eps**2 - 0.5 * math.log(2 * math.pi), axis=-1)


def test_registry_lists_every_family_and_names_a_bad_one():
    assert posteriors.names() == ["diag", "iaf", "tril", "tril_source"]
    with pytest.raises(ValueError, match=r"Unknown posterior 'full'; expected one of"):
        posteriors.get("full")


@pytest.mark.parametrize("name", ["diag", "tril", "tril_source"])
def test_gaussian_reparameterize_is_loc_plus_scale_eps_with_the_distributions_density(name):
    family = bound(name)
    params = random_params(family)
    q = family.new(params, D)
    eps = RNG.normal(size=(5, B, D)).astype(np.float32)  # [k, B, D] broadcasts against [B, P]
    z, log_q = family.reparameterize(params, D, tf.constant(eps))
    L = q.scale.to_dense().numpy()
    np.testing.assert_allclose(z.numpy(), q.mean().numpy() + np.einsum("bij,kbj->kbi", L, eps),
                               rtol=1e-5, atol=1e-5)
    sigma = np.diagonal(L, axis1=1, axis2=2)
    np.testing.assert_allclose(log_q.numpy(), log_std_normal(eps) - np.log(sigma).sum(-1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(log_q.numpy(), q.log_prob(z).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(family.location(params, D).numpy(), q.mean().numpy(), rtol=1e-6)


def test_default_tril_damps_the_off_diagonal_by_a_hundredth():
    d = 4
    log_sigma = RNG.normal(size=(3, d)).astype(np.float32)
    l_prime = RNG.normal(size=(3, d, d)).astype(np.float32)
    L = posteriors.get("tril").scale_tril(tf.constant(log_sigma), tf.constant(l_prime)).numpy()
    sigma = softplus_scale(log_sigma)
    np.testing.assert_allclose(L, 0.01 * np.tril(l_prime, k=-1) + np.stack([np.diag(s) for s in sigma]),
                               rtol=1e-6)
    source = posteriors.get("tril_source").scale_tril(tf.constant(log_sigma), tf.constant(l_prime))
    # The source's construction keeps sigma = exp(log sigma) (softly bounded).
    np.testing.assert_allclose(np.diagonal(source.numpy(), axis1=1, axis2=2),
                               bounded_scale(log_sigma).numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["diag", "tril", "tril_source", "iaf"])
def test_reparameterized_samples_have_the_posteriors_density_in_expectation(name):
    """Monte-Carlo KL(q || N(0, I)) from reparameterize against the closed form or q.log_prob."""
    family = bound(name)
    if name == "iaf":
        for network in family.networks:
            randomize_weights(network)
    params = random_params(family, batch=2)
    eps = tf.random.stateless_normal([20000, 2, D], seed=[3, 4])
    z, log_q = family.reparameterize(params, D, eps)
    log_p = tfd.MultivariateNormalDiag(tf.zeros(D)).log_prob(z)
    samples = (log_q - log_p).numpy()
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    q = family.new(params, D)
    if name == "iaf":  # no closed form: the density of the same z by inverting the flow
        reference = (q.log_prob(z[:200]) - log_p[:200]).numpy().mean(0)
        np.testing.assert_allclose(q.log_prob(z[:200]).numpy(), log_q[:200].numpy(), rtol=1e-4, atol=1e-3)
        assert np.all(np.abs(mc - reference) < 5 * se * math.sqrt(100) + 1e-3)
    else:
        analytic = tfd.kl_divergence(q, tfd.MultivariateNormalDiag(tf.zeros(D))).numpy()
        assert np.all(np.abs(mc - analytic) < 5 * se + 1e-3), (mc, analytic, se)


# ------------------------------------------------------------------------ IAF


def test_made_outputs_depend_only_on_earlier_coordinates():
    d = 5
    net = posteriors.AutoregressiveNetwork(d, hidden_units=16)
    net.build((None, d), (None, 2))
    randomize_weights(net)
    z = tf.constant(RNG.normal(size=(3, d)), tf.float32)
    context = tf.constant(RNG.normal(size=(3, 2)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        shift, gate = net(z, context)
    for out in (shift, gate):
        jac = tape.batch_jacobian(out, z).numpy()  # [B, out i, in j]
        assert np.all(jac[:, np.triu_indices(d)[0], np.triu_indices(d)[1]] == 0)  # j >= i: none
        assert np.all(np.abs(np.tril(jac[0], k=-1))[np.tril_indices(d, k=-1)] > 0)  # j < i: all
    # The context reaches every output, the first included.
    with tf.GradientTape() as tape:
        tape.watch(context)
        first = net(z, context)[0][:, 0]
    assert np.all(np.abs(tape.gradient(first, context).numpy()) > 0)


def test_iaf_log_q_is_the_base_density_minus_the_log_determinant_of_the_flow():
    # 128 hidden units: with the default 256 and weights of scale 0.3 the float32 Jacobian
    # determinant alone is off by ~1e-4 relative.
    family = posteriors.InverseAutoregressiveFlow(hidden_units=128).bind(D)
    family.initialize_head(None, D)
    for network in family.networks:
        randomize_weights(network)
    params = random_params(family)
    eps = tf.constant(RNG.normal(size=(B, D)), tf.float32)
    loc, log_sigma = params[:, :D], params[:, D : 2 * D]
    sigma = tf.constant(softplus_scale(log_sigma), tf.float32)
    with tf.GradientTape() as tape:
        z0 = loc + sigma * eps
        tape.watch(z0)
        z, log_q = family.reparameterize(params, D, (z0 - loc) / sigma)
    jac = tape.batch_jacobian(z, z0).numpy().astype(np.float64)
    base = log_std_normal(eps.numpy()) - np.log(sigma.numpy()).sum(-1)
    hand = base - np.log(np.abs(np.linalg.det(jac)))
    np.testing.assert_allclose(log_q.numpy(), hand, rtol=1e-4, atol=1e-4)
    # The TransformedDistribution computes the same density by inverting each step.
    np.testing.assert_allclose(family.new(params, D).log_prob(z).numpy(), log_q.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(family.location(params, D).numpy(),
                               family.reparameterize(params, D, tf.zeros([B, D]))[0].numpy(), rtol=1e-6)


def test_an_untrained_iaf_is_a_scaled_diagonal_gaussian():
    """Zero output weights: each step is z -> sigmoid(gate_bias) z, so q is Gaussian in closed form."""
    family = posteriors.InverseAutoregressiveFlow(num_steps=2, gate_bias=2.0).bind(D)
    family.build()
    params = random_params(family)
    c = (1 / (1 + math.exp(-2.0))) ** 2
    loc, sigma = params[:, :D].numpy(), softplus_scale(params[:, D : 2 * D]).astype(np.float32)
    gaussian = tfd.MultivariateNormalDiag(c * loc, c * sigma)
    eps = tf.random.stateless_normal([7, B, D], seed=[1, 1])
    z, log_q = family.reparameterize(params, D, eps)
    np.testing.assert_allclose(z.numpy(), c * (loc + sigma * eps.numpy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_q.numpy(), gaussian.log_prob(z).numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad,message", [
    (lambda: posteriors.InverseAutoregressiveFlow(num_steps=0), "num_steps must be a positive integer, got 0"),
    (lambda: posteriors.InverseAutoregressiveFlow(hidden_units=2.5), "hidden_units must be a positive integer, got 2.5"),
    (lambda: posteriors.InverseAutoregressiveFlow(context_size=-1), "context_size must be a positive integer, got -1"),
    (lambda: posteriors.AutoregressiveNetwork(0), "latent_dim must be a positive integer, got 0"),
    (lambda: posteriors.AutoregressiveNetwork(3, gate_bias=float("nan")), "gate_bias must be finite, got nan"),
    (lambda: posteriors.InverseAutoregressiveFlow(latent_dim=3).bind(4), "latent_dim=3 but the model has latent_dim=4"),
])
def test_iaf_arguments_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


@pytest.mark.parametrize("layer", [
    posteriors.AutoregressiveNetwork(4, hidden_units=8, gate_bias=1.5),
    posteriors.InverseAutoregressiveFlow(latent_dim=4, num_steps=3, hidden_units=8, context_size=5),
])
def test_iaf_layers_round_trip_their_config(layer):
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_a_vae_with_an_iaf_posterior_samples_the_kl_and_tracks_the_flow_weights():
    enc, dec = tfp_vae.networks.build("mlp", D, (6,), hidden=(8,))
    family = posteriors.InverseAutoregressiveFlow(num_steps=2, hidden_units=8, context_size=4)
    model = tfp_vae.VAE(enc, dec, D, posterior=family)
    assert model.kl_method == "path"  # sampled, with the path-derivative gradient
    assert model.posterior_head.units == 2 * D + 4
    flow_weights = {id(w) for n in family.networks for w in n.trainable_weights}
    assert flow_weights <= {id(w) for w in model.trainable_weights}
    q = model.posterior(np.zeros((2, 6)))
    assert "TransformedDistribution" in type(q).__name__ and q.event_shape == [D]
    assert q.sample(5, seed=[1, 2]).shape == [5, 2, D]


def test_default_tril_head_starts_like_the_diag_head():
    """mu and log sigma weights drawn with the diag head's Glorot limit; L' weights zero."""
    d, features = 16, 256
    heads = {}
    for name in ("diag", "tril"):
        family = posteriors.get(name)
        head = keras.layers.Dense(family.params_size(d))
        head.build((None, features))
        keras.utils.set_random_seed(0)
        family.initialize_head(head, d)
        heads[name] = head.kernel.numpy()
    limit = math.sqrt(6 / (features + 2 * d))
    for kernel in heads.values():
        assert np.abs(kernel[:, : 2 * d]).max() <= limit
        assert np.abs(kernel[:, : 2 * d]).max() > 0.95 * limit  # the full range is used
    assert np.all(heads["tril"][:, 2 * d :] == 0)


@pytest.mark.parametrize("name", ["diag", "tril", "tril_source"])
def test_gaussian_encoding_is_the_mean_and_scale_of_q(name):
    family = bound(name)
    params = random_params(family)
    q = family.new(params, D)
    loc, scale_tril = family.encoding(params, D)
    np.testing.assert_allclose(loc.numpy(), q.mean().numpy(), rtol=1e-6)
    np.testing.assert_allclose(scale_tril.numpy(), q.scale.to_dense().numpy(), rtol=1e-6)


def test_made_jacobian_matches_autodiff():
    net = posteriors.AutoregressiveNetwork(4, hidden_units=16)
    net.build((None, 4), (None, 3))
    randomize_weights(net)
    z = tf.constant(RNG.normal(size=(5, 4)), tf.float32)
    context = tf.constant(RNG.normal(size=(5, 3)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        shift, gate = net(z, context)
    for closed, out in zip(net.jacobian(z, context), (shift, gate)):
        np.testing.assert_allclose(closed.numpy(), tape.batch_jacobian(out, z).numpy(), rtol=1e-5, atol=1e-6)


def test_iaf_encoding_is_the_flow_linearized_at_the_base_mean():
    family = posteriors.InverseAutoregressiveFlow(num_steps=3, hidden_units=16, context_size=4).bind(D)
    family.build()
    for network in family.networks:
        randomize_weights(network)
    params = random_params(family)
    eps = tf.zeros([B, D])
    with tf.GradientTape() as tape:
        tape.watch(eps)
        z, _ = family.reparameterize(params, D, eps)
    jac = tape.batch_jacobian(z, eps).numpy().astype(np.float64)
    loc, scale_tril = family.encoding(params, D)
    np.testing.assert_allclose(loc.numpy(), z.numpy(), rtol=1e-6)
    L = scale_tril.numpy()
    assert np.all(np.triu(L, 1) == 0) and np.all(np.diagonal(L, axis1=1, axis2=2) > 0)
    np.testing.assert_allclose(L @ np.swapaxes(L, 1, 2), jac @ np.swapaxes(jac, 1, 2), rtol=1e-4, atol=1e-5)
