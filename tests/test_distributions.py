"""The mathematics of posteriors, priors and likelihoods against hand formulas."""

import math

import numpy as np
import pytest

import tfp_vae
from tfp_vae._backend import MAX_LOG_SCALE, MIN_LOG_SCALE, bounded_scale, tf, tfd
from tfp_vae.posteriors import DiagonalGaussian, FullCovarianceGaussian

RNG = np.random.default_rng(1234)


def diag_params(batch, d, scale=0.5):
    loc = RNG.normal(size=(batch, d)).astype(np.float32)
    log_sigma = (scale * RNG.normal(size=(batch, d))).astype(np.float32)
    return loc, log_sigma


def test_bounded_scale_is_exp_in_the_middle_and_bounded_at_the_ends():
    mid = np.linspace(-1.0, 1.0, 11).astype(np.float32)
    np.testing.assert_allclose(bounded_scale(mid).numpy(), np.exp(mid), rtol=0.03)
    extremes = bounded_scale(tf.constant([-1e4, -50.0, 50.0, 1e4])).numpy()
    assert np.all(np.isfinite(extremes)) and np.all(extremes > 0)
    assert extremes.min() >= math.exp(MIN_LOG_SCALE) * 0.999
    assert extremes.max() <= math.exp(MAX_LOG_SCALE) * 1.001


def softplus_scale(raw):
    """The diag family's sigma, by hand: log(1 + e^raw) + exp(MIN_LOG_SCALE)."""
    return np.logaddexp(0.0, raw) + math.exp(MIN_LOG_SCALE)


def test_softplus_scale_is_softplus_above_its_floor():
    from tfp_vae._backend import softplus_scale as library

    raw = np.array([-1e4, -20.0, -1.0, 0.0, 1.0, 30.0], np.float32)
    np.testing.assert_allclose(library(raw).numpy(), softplus_scale(raw), rtol=1e-6)
    assert library(tf.constant(-1e4)).numpy() == np.float32(math.exp(MIN_LOG_SCALE))


def test_diagonal_kl_matches_hand_formula():
    loc, log_sigma = diag_params(7, 5)
    q = DiagonalGaussian.new(tf.concat([loc, log_sigma], -1), 5)
    sigma = softplus_scale(log_sigma)
    hand = 0.5 * np.sum(sigma**2 + loc**2 - np.log(sigma**2) - 1.0, axis=-1)
    prior = tfp_vae.priors.StandardNormal(latent_dim=5).distribution()
    np.testing.assert_allclose(tfd.kl_divergence(q, prior).numpy(), hand, rtol=1e-5)


def test_tril_scale_is_masked_l_prime_plus_diag_sigma():
    d = 4
    log_sigma = RNG.normal(size=(3, d)).astype(np.float32)
    l_prime = RNG.normal(size=(3, d, d)).astype(np.float32)
    L = FullCovarianceGaussian.scale_tril(tf.constant(log_sigma), tf.constant(l_prime)).numpy()
    sigma = bounded_scale(log_sigma).numpy()
    expected = np.tril(l_prime, k=-1) + np.stack([np.diag(s) for s in sigma])
    np.testing.assert_allclose(L, expected, rtol=1e-6)
    assert np.all(np.triu(L, k=1) == 0)  # nothing above the diagonal leaks through


def _tril_posterior(batch, d):
    loc, log_sigma = diag_params(batch, d, scale=0.3)
    l_prime = (0.5 * RNG.normal(size=(batch, d * d))).astype(np.float32)
    params = np.concatenate([loc, log_sigma, l_prime], -1)
    q = FullCovarianceGaussian.new(tf.constant(params), d)
    return q, loc, log_sigma


def test_full_covariance_kl_matches_closed_form_with_trace_and_log_determinants():
    d = 3
    q, loc0, _ = _tril_posterior(4, d)
    p, loc1, _ = _tril_posterior(4, d)
    S0 = q.covariance().numpy().astype(np.float64)
    S1 = p.covariance().numpy().astype(np.float64)
    hand = []
    for i in range(4):
        inv1 = np.linalg.inv(S1[i])
        diff = loc1[i] - loc0[i]
        hand.append(0.5 * (np.trace(inv1 @ S0[i]) + diff @ inv1 @ diff - d
                           + np.log(np.linalg.det(S1[i]) / np.linalg.det(S0[i]))))
    np.testing.assert_allclose(tfd.kl_divergence(q, p).numpy(), hand, rtol=1e-4, atol=1e-5)


def test_tril_log_density_is_log_p_eps_minus_sum_log_sigma():
    d = 4
    q, loc, log_sigma = _tril_posterior(6, d)
    eps = RNG.normal(size=(6, d)).astype(np.float32)
    L = q.scale.to_dense().numpy()
    z = loc + np.einsum("bij,bj->bi", L, eps)
    log_p_eps = np.sum(-0.5 * eps**2 - 0.5 * np.log(2 * np.pi), axis=-1)
    hand = log_p_eps - np.sum(np.log(bounded_scale(log_sigma).numpy()), axis=-1)
    np.testing.assert_allclose(q.log_prob(z).numpy(), hand, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", [DiagonalGaussian, FullCovarianceGaussian])
def test_reparameterize_is_the_distributions_own_sample_and_log_density(family):
    # z = loc + scale @ eps and log q(z|x) = sum log N(eps) - sum log sigma, from eps
    # alone, for noise shaped [k, B, D] against parameters [B, P].
    d, b, k = 3, 4, 5
    params = tf.constant(0.5 * RNG.normal(size=(b, family.params_size(d))), tf.float32)
    eps = tf.constant(RNG.normal(size=(k, b, d)), tf.float32)
    z, log_q = family.reparameterize(params, d, eps)
    q = family.new(params, d)
    assert z.shape == (k, b, d) and log_q.shape == (k, b)
    want_z = q.loc.numpy() + np.einsum("bij,kbj->kbi", q.scale.to_dense().numpy(), eps.numpy())
    np.testing.assert_allclose(z.numpy(), want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_q.numpy(), q.log_prob(z).numpy(), rtol=1e-5, atol=1e-4)


def _mc_kl(q, p, n, seed):
    z = q.sample(n, seed=seed)
    sample = (q.log_prob(z) - p.log_prob(z)).numpy()
    return sample.mean(axis=0), sample.std(axis=0) / math.sqrt(n)


@pytest.mark.parametrize("family", [DiagonalGaussian, FullCovarianceGaussian])
def test_sampled_kl_agrees_with_analytic_kl(family):
    d = 3
    params = tf.constant(0.4 * RNG.normal(size=(5, family.params_size(d))), tf.float32)
    q = family.new(params, d)
    p = tfp_vae.priors.StandardNormal(latent_dim=d).distribution()
    mean, stderr = _mc_kl(q, p, 20000, seed=[1, 2])
    analytic = tfd.kl_divergence(q, p).numpy()
    assert np.all(np.abs(mean - analytic) < 5 * stderr + 1e-3), (mean, analytic, stderr)


def test_mixture_prior_has_no_closed_form_and_its_sampled_kl_is_consistent():
    d = 2
    prior = tfp_vae.priors.MixtureOfGaussians(num_components=3, latent_dim=d, seed=3)
    prior.build((None, 4))
    p = prior.distribution()
    q = DiagonalGaussian.new(tf.constant([[0.3, -0.2, -0.5, 0.1]]), d)
    with pytest.raises(NotImplementedError):
        tfd.kl_divergence(q, p)
    # Against a numerical integral of q log(q/p) on a fine grid.
    grid = np.linspace(-6, 6, 601).astype(np.float32)
    zz = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)
    log_q = q.log_prob(zz).numpy()[:, 0]
    log_p = p.log_prob(zz[:, 0]).numpy()
    cell = (grid[1] - grid[0]) ** 2
    integral = float(np.sum(np.exp(log_q) * (log_q - log_p)) * cell)
    mean, stderr = _mc_kl(q, p, 20000, seed=[4, 5])
    assert abs(mean[0] - integral) < 5 * stderr[0] + 1e-3


def test_mixture_prior_density_is_the_weighted_sum_of_components():
    prior = tfp_vae.priors.MixtureOfGaussians(num_components=4, latent_dim=3, seed=0)
    prior.build((None, 5))
    prior.logits.assign([0.1, -0.3, 0.7, 0.0])
    z = RNG.normal(size=(6, 3)).astype(np.float32)
    weights = tf.nn.softmax(prior.logits).numpy()
    means, scales = prior.means.numpy(), bounded_scale(prior.log_scales).numpy()
    comp = np.stack([
        np.sum(-0.5 * ((z - means[k]) / scales[k]) ** 2 - np.log(scales[k]) - 0.5 * np.log(2 * np.pi), -1)
        for k in range(4)
    ], -1)
    hand = np.log(np.sum(weights * np.exp(comp), axis=-1))
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), hand, rtol=1e-5)


def test_bernoulli_likelihood_is_minus_binary_cross_entropy():
    lik = tfp_vae.likelihoods.Bernoulli()
    lik.build((None, 3, 2))
    logits = RNG.normal(size=(4, 3, 2)).astype(np.float32)
    x = RNG.uniform(size=(4, 3, 2)).astype(np.float32)  # grey levels, as the source uses
    p = 1 / (1 + np.exp(-logits))
    hand = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2))
    np.testing.assert_allclose(lik.distribution(tf.constant(logits)).log_prob(x).numpy(), hand, rtol=1e-5)
    np.testing.assert_allclose(lik.mean(tf.constant(logits)).numpy(), p, rtol=1e-6)


def test_gaussian_likelihood_with_fixed_variance_is_scaled_squared_error():
    c = 0.05
    lik = tfp_vae.likelihoods.Gaussian(variance=c, mean_activation="linear")
    lik.build((None, 5))
    f, x = RNG.normal(size=(3, 5)).astype(np.float32), RNG.normal(size=(3, 5)).astype(np.float32)
    hand = -np.sum((x - f) ** 2, axis=-1) / (2 * c) - 5 / 2 * np.log(2 * np.pi * c)
    np.testing.assert_allclose(lik.distribution(tf.constant(f)).log_prob(x).numpy(), hand, rtol=1e-5)


@pytest.mark.parametrize("learn_scale,shape", [("global", ()), ("pixel", (2, 3))])
def test_gaussian_learned_scale_has_the_right_shape_and_starts_at_sqrt_c(learn_scale, shape):
    lik = tfp_vae.likelihoods.Gaussian(variance=0.04, learn_scale=learn_scale)
    lik.build((None, 2, 3))
    assert tuple(lik.log_scale.shape) == shape
    np.testing.assert_allclose(lik.scale().numpy(), 0.2, rtol=0.02)
    dist = lik.distribution(tf.zeros([4, 2, 3]))
    assert dist.batch_shape == [4] and dist.event_shape == [2, 3]


def test_vamp_prior_is_the_uniform_mixture_of_pseudo_input_posteriors():
    enc, dec = tfp_vae.networks.build("mlp", 2, (4,), hidden=(8,))
    model = tfp_vae.VAE(enc, dec, 2, prior=tfp_vae.priors.VampPrior(num_pseudo_inputs=3))
    p = model.prior()
    q_u = model.posterior(model.prior_layer.pseudo_inputs())
    z = RNG.normal(size=(5, 2)).astype(np.float32)
    hand = np.log(np.mean(np.exp(q_u.log_prob(z[:, None, :]).numpy()), axis=-1))
    np.testing.assert_allclose(p.log_prob(z).numpy(), hand, rtol=1e-5)
    # no closed form against a mixture: diag trains with the path-derivative estimator and
    # the ELBO's KL value is sampled
    assert model.kl_method == "path" and model.elbo_kl_method == "sampled"


@pytest.mark.parametrize("bad,message", [
    (lambda: tfp_vae.posteriors.get("full"), "Unknown posterior 'full'"),
    (lambda: tfp_vae.priors.get("laplace"), "Unknown prior 'laplace'"),
    (lambda: tfp_vae.likelihoods.get("poisson"), "Unknown likelihood 'poisson'"),
    (lambda: tfp_vae.likelihoods.Gaussian(variance=0.0), "variance must be a positive"),
    (lambda: tfp_vae.likelihoods.Gaussian(learn_scale="row"), "learn_scale must be one of"),
    (lambda: tfp_vae.priors.MixtureOfGaussians(num_components=0), "num_components must be"),
])
def test_bad_arguments_name_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_tril_posterior_starts_diagonal():
    enc, dec = tfp_vae.networks.build("mlp", 3, (6,), hidden=(8,))
    model = tfp_vae.VAE(enc, dec, 3, posterior="tril")
    x = RNG.random((5, 6)).astype(np.float32)
    L = model.posterior(x).scale.to_dense().numpy()
    assert np.all(np.tril(L, k=-1) == 0) and np.all(np.diagonal(L, axis1=1, axis2=2) > 0)
    # The head is otherwise trained as usual: gradients reach the L' weights.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.posterior(x).sample(seed=[1, 2]) ** 2)
    grad = tape.gradient(loss, model.posterior_head.kernel).numpy()
    assert np.any(grad[:, 6:] != 0)
