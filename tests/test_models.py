"""VAE and autoencoder behaviour: training, bounds, saving, callbacks, seeds."""

import math
import os

import numpy as np
import pytest

import tfp_vae
from tfp_vae._backend import keras, tf
from tfp_vae.autoencoders import Autoencoder, kl_sparsity_penalty


@pytest.fixture(scope="module")
def digits():
    (x_train, _), (x_test, y_test) = tfp_vae.data.load("digits")
    return x_train[:512], x_test[:64], y_test[:64]


def make_vae(latent=2, hidden=(32,), shape=(8, 8, 1), **kwargs):
    enc, dec = tfp_vae.networks.build("mlp", latent, shape, hidden=hidden)
    return tfp_vae.VAE(enc, dec, latent, seed=0, **kwargs)


def fit_losses(model, x, epochs=4, batch_size=64, lr=3e-3):
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    return model.fit(x, epochs=epochs, batch_size=batch_size, verbose=0).history["loss"]


FAMILIES = [
    dict(posterior=p, prior=pr, likelihood=lik)
    for p in ("diag", "tril")
    for pr in ("normal", "mog", "vamp")
    for lik in ("bernoulli", "gaussian")
] + [
    dict(posterior="tril_source"),
    dict(posterior="iaf"),
    dict(posterior="iaf", prior="mog"),
    dict(objective="iwae", num_train_samples=5),
    dict(kl_warmup_epochs=2),
    dict(beta=4.0),
    dict(likelihood=tfp_vae.likelihoods.Gaussian(learn_scale="pixel")),
    dict(likelihood=tfp_vae.likelihoods.Gaussian(learn_scale="global")),
]


@pytest.mark.parametrize("kwargs", FAMILIES, ids=lambda k: "-".join(
    f"{v}" if not isinstance(v, keras.layers.Layer) else f"gaussian-{v.learn_scale}"
    for v in k.values()))
def test_a_short_fit_lowers_the_loss_for_every_vae_family(digits, kwargs):
    x, _, _ = digits
    losses = fit_losses(make_vae(**kwargs), x)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] * 0.97, losses


AE_VARIANTS = [
    dict(),
    dict(loss="mse"),
    dict(sparsity="l1", sparsity_weight=1e-2),
    dict(sparsity="kl", sparsity_weight=0.5, sparsity_target=0.1),
    dict(noise="gaussian", noise_level=0.3),
    dict(noise="mask", noise_level=0.3),
]


@pytest.mark.parametrize("kwargs", AE_VARIANTS, ids=lambda k: "-".join(map(str, k.values())) or "plain")
def test_a_short_fit_lowers_the_loss_for_every_autoencoder(digits, kwargs):
    x, _, _ = digits
    enc, dec = tfp_vae.networks.build("mlp", 4, (8, 8, 1), hidden=(32,))
    losses = fit_losses(Autoencoder(enc, dec, 4, seed=0, **kwargs), x)
    assert losses[-1] < losses[0] * 0.97, losses


def test_conv_autoencoder_and_vae_train_on_padded_images():
    (x, _), _ = tfp_vae.data.load("digits", pad=True)  # 8x8 is already a multiple of 8
    x = np.pad(x[:256], ((0, 0), (12, 12), (12, 12), (0, 0)))  # 32x32, the source's size
    enc, dec = tfp_vae.networks.build("conv", 2, (32, 32, 1))
    assert [l.filters for l in enc.layers if hasattr(l, "filters")] == [32, 64, 128]
    assert [l.strides for l in enc.layers if hasattr(l, "strides")] == [(2, 2)] * 3
    losses = fit_losses(tfp_vae.VAE(enc, dec, 2, seed=0), x, epochs=3)
    assert losses[-1] < losses[0]


def test_conv_network_refuses_a_shape_it_cannot_mirror():
    with pytest.raises(ValueError, match=r"divisible by 8, got \(28, 28, 1\).*Pad 28x28"):
        tfp_vae.networks.build("conv", 2, (28, 28, 1))


def test_sparsity_penalties_match_hand_formulas():
    codes = np.array([[0.1, 0.9, 0.5], [0.3, 0.7, 0.2]], np.float32)
    rho = 0.05
    rho_hat = codes.mean(0)
    hand = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    np.testing.assert_allclose(kl_sparsity_penalty(tf.constant(codes), rho).numpy(), hand, rtol=1e-5)
    enc, dec = tfp_vae.networks.build("mlp", 3, (4,), hidden=(8,))
    ae = Autoencoder(enc, dec, 3, sparsity="l1", sparsity_weight=0.5)
    np.testing.assert_allclose(ae.penalty(tf.constant(codes)).numpy(),
                               0.5 * np.abs(codes).sum(1).mean(), rtol=1e-6)


def test_denoising_corruption_only_in_training():
    enc, dec = tfp_vae.networks.build("mlp", 3, (100,), hidden=(8,))
    ae = Autoencoder(enc, dec, 3, noise="mask", noise_level=0.5)
    x = tf.ones([4, 100])
    masked = ae.corrupt(x, tf.constant([1, 2])).numpy()
    assert 0.3 < (masked == 0).mean() < 0.7
    out = ae._terms(x, None, training=False)  # evaluation sees the clean input
    np.testing.assert_allclose(out["reconstruction"].numpy(),
                               ae.reconstruction_loss(x, ae.decoder(ae.encode(x))).numpy().mean(),
                               rtol=1e-5)


@pytest.fixture(scope="module")
def trained_vae(digits):
    x, _, _ = digits
    model = make_vae(latent=2, hidden=(64,))
    fit_losses(model, x, epochs=15)
    return model


def test_importance_sampled_log_likelihood_bounds_the_elbo_and_grows_with_k(trained_vae, digits):
    _, x_test, _ = digits
    elbo = trained_vae.elbo(x_test, seed=0, num_samples=1000).numpy()  # low-noise ELBO
    ll = {k: trained_vae.log_likelihood(x_test, num_samples=k, seed=1).numpy() for k in (1, 10, 100, 1000)}
    # k = 1 is a one-sample ELBO: equal to the ELBO in expectation.
    assert abs(ll[1].mean() - elbo.mean()) < 0.1 * abs(elbo.mean())
    assert ll[1000].mean() >= elbo.mean()
    m1, m10, m100, m1000 = (ll[k].mean() for k in (1, 10, 100, 1000))
    # The bound grows with k in expectation; between far-apart k the gain dwarfs the
    # Monte-Carlo error, between 100 and 1000 it is of the same size.
    assert m1 < m10 < m1000, (m1, m10, m1000)
    assert m1000 > m100 - 0.05, (m100, m1000)
    assert np.mean(ll[1000] >= elbo) > 0.9


def test_log_likelihood_chunks_do_not_change_the_estimate(trained_vae, digits):
    _, x_test, _ = digits
    big = trained_vae.log_likelihood(x_test[:8], num_samples=2000, max_rows=100_000).numpy()
    small = trained_vae.log_likelihood(x_test[:8], num_samples=2000, max_rows=50, seed=7).numpy()
    # Different chunking draws different samples: equal up to Monte-Carlo error.
    np.testing.assert_allclose(big, small, atol=0.3)


def _hand_kl_to_standard_normal(model, x):
    q = model.posterior(x)
    sigma2 = q.variance().numpy()
    mu = q.mean().numpy()
    return 0.5 * np.sum(sigma2 + mu**2 - np.log(sigma2) - 1, axis=-1)


def test_elbo_uses_the_closed_form_kl_when_registered(trained_vae, digits):
    _, x_test, _ = digits
    assert trained_vae.kl_method == "path"  # diag trains with the path-derivative estimator
    assert trained_vae.elbo_kl_method == "analytic"
    seed = tf.constant([3, 4])
    terms = trained_vae._terms(tf.constant(x_test), seed, training=True, num_samples=1)
    hand = _hand_kl_to_standard_normal(trained_vae, x_test)
    # elbo() reports the closed form, with the reconstruction term from the same z.
    elbo = trained_vae.elbo(x_test, seed=seed).numpy()
    np.testing.assert_allclose(elbo, -(terms["reconstruction"].numpy() + hand), rtol=1e-4, atol=1e-3)
    # while the training term's value is the one-sample estimate at that z
    assert np.abs(terms["kl"].numpy() - hand).mean() > 0.1
    # validation (training=False) takes no gradient and uses the closed form too
    evaluated = trained_vae._terms(tf.constant(x_test), seed, training=False, num_samples=1)
    np.testing.assert_allclose(evaluated["kl"].numpy(), hand, rtol=1e-4)


def test_elbo_samples_the_kl_where_no_closed_form_exists():
    for kwargs in (dict(kl="sampled"), dict(prior="mog"), dict(posterior="iaf")):
        model = make_vae(**kwargs)
        expected = "analytic" if kwargs == dict(kl="sampled") else "sampled"
        assert model.elbo_kl_method == expected, kwargs


def test_kl_analytic_trains_with_the_closed_form(digits):
    _, x_test, _ = digits
    model = make_vae(latent=4, shape=x_test.shape[1:], kl="analytic")
    assert model.kl_method == "analytic"
    terms = model._terms(tf.constant(x_test), tf.constant([3, 4]), num_samples=1)
    np.testing.assert_allclose(terms["kl"].numpy(), _hand_kl_to_standard_normal(model, x_test),
                               rtol=1e-4)


def test_kl_option_forces_the_estimate():
    assert make_vae(kl="sampled").kl_method == "sampled"
    with pytest.raises(ValueError, match="kl='analytic' but tfd.kl_divergence has no closed form"):
        make_vae(prior="mog", kl="analytic")


def test_kl_warmup_ramps_the_weight_linearly(digits):
    x, _, _ = digits
    model = make_vae(kl_warmup_epochs=4)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(float(model.kl_weight.numpy())))
    model.compile(optimizer="adam")
    model.fit(x, epochs=5, batch_size=128, verbose=0, callbacks=[record])
    # Weight at the last batch of epoch e is (e + 3/4) / 4 (4 batches per epoch), capped at 1.
    np.testing.assert_allclose(seen, [0.1875, 0.4375, 0.6875, 0.9375, 1.0], rtol=1e-6)


def test_sampling_is_reproducible_and_rows_are_independent(trained_vae):
    a = trained_vae.sample(5, seed=3).numpy()
    np.testing.assert_array_equal(a, trained_vae.sample(5, seed=3).numpy())
    assert not np.allclose(a, trained_vae.sample(5, seed=4).numpy())
    seeds = np.array([[3, 0], [3, 1], [3, 2], [3, 3], [3, 4]], np.int32)
    alone = trained_vae.generate(seeds[2:3])
    np.testing.assert_allclose(alone["x"].numpy()[0], a[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        alone["z"].numpy()[0], trained_vae.generate(seeds)["z"].numpy()[2])


def test_serving_log_likelihood_matches_the_estimator(trained_vae, digits):
    _, x_test, _ = digits
    seeds = np.stack([np.arange(8), np.arange(8)], 1).astype(np.int32)
    ll, elbo = trained_vae.log_likelihood_from_seeds(tf.constant(x_test[:8]), seeds, 500)
    ref = trained_vae.log_likelihood(x_test[:8], num_samples=500).numpy()
    np.testing.assert_allclose(ll.numpy(), ref, atol=0.5)
    assert np.all(ll.numpy() >= elbo.numpy())
    one, _ = trained_vae.log_likelihood_from_seeds(tf.constant(x_test[3:4]), seeds[3:4], 500)
    np.testing.assert_allclose(one.numpy()[0], ll.numpy()[3], rtol=1e-5)
    # Row 3's estimate uses only its own seed row: other seeds in the batch change nothing.
    other = seeds.copy()
    other[[0, 1, 2, 4, 5, 6, 7]] += 100
    moved, _ = trained_vae.log_likelihood_from_seeds(tf.constant(x_test[:8]), other, 500)
    np.testing.assert_allclose(moved.numpy()[3], ll.numpy()[3], rtol=1e-6)
    assert not np.allclose(moved.numpy()[:3], ll.numpy()[:3], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    dict(prior="mog", likelihood=tfp_vae.likelihoods.Gaussian(learn_scale="pixel"), posterior="tril"),
    dict(prior=tfp_vae.priors.VampPrior(num_pseudo_inputs=4)),
    dict(posterior=tfp_vae.posteriors.InverseAutoregressiveFlow(num_steps=3, hidden_units=16, context_size=8)),
])
def test_save_and_load_give_identical_outputs(tmp_path, digits, kwargs):
    x, x_test, _ = digits
    model = make_vae(**kwargs)
    fit_losses(model, x[:128], epochs=1)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.prior_layer) is type(model.prior_layer)
    assert type(loaded.likelihood_layer) is type(model.likelihood_layer)
    assert loaded.posterior_family.name == model.posterior_family.name
    if hasattr(model.posterior_family, "get_config"):
        assert loaded.posterior_family.get_config() == model.posterior_family.get_config()
    for method in ("reconstruct", "encode"):
        np.testing.assert_array_equal(getattr(loaded, method)(x_test).numpy(),
                                      getattr(model, method)(x_test).numpy())
    np.testing.assert_array_equal(loaded.sample(4, seed=1).numpy(), model.sample(4, seed=1).numpy())
    np.testing.assert_allclose(loaded.elbo(x_test, seed=5).numpy(), model.elbo(x_test, seed=5).numpy(),
                               rtol=1e-5)
    assert (loaded.kl_method, loaded.elbo_kl_method) == (model.kl_method, model.elbo_kl_method)
    np.testing.assert_array_equal(loaded.prior().log_prob(tf.zeros([1, 2])).numpy(),
                                  model.prior().log_prob(tf.zeros([1, 2])).numpy())


def test_autoencoder_save_and_load(tmp_path, digits):
    x, x_test, _ = digits
    enc, dec = tfp_vae.networks.build("mlp", 3, (8, 8, 1), hidden=(16,))
    ae = Autoencoder(enc, dec, 3, sparsity="kl", noise="gaussian")
    fit_losses(ae, x[:128], epochs=1)
    ae.save(tmp_path / "ae.keras")
    loaded = keras.models.load_model(tmp_path / "ae.keras")
    assert loaded.sparsity == "kl" and loaded.noise == "gaussian"
    np.testing.assert_array_equal(loaded.reconstruct(x_test).numpy(), ae.reconstruct(x_test).numpy())


def test_standard_callbacks_work(tmp_path, digits):
    x, x_test, _ = digits
    model = make_vae()
    model.compile(optimizer="adam")
    ckpt = tmp_path / "best.keras"
    history = model.fit(
        x, epochs=6, batch_size=128, verbose=0, validation_data=(x_test,),
        callbacks=[
            keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9),
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.TensorBoard(tmp_path / "logs"),
        ],
    ).history
    assert len(history["loss"]) == 2  # min_delta this large stops after `patience` epochs
    assert {"val_elbo", "val_kl", "val_reconstruction"} <= set(history)
    restored = keras.models.load_model(ckpt)
    assert restored.latent_dim == model.latent_dim
    assert any(f.startswith("events") for _, _, fs in os.walk(tmp_path / "logs") for f in fs)


def test_terminate_on_nan_stops_a_diverging_fit(digits):
    x, _, _ = digits
    model = make_vae()
    model.compile(optimizer="adam")
    bad = x.copy()
    bad[5, 0, 0, 0] = np.nan
    history = model.fit(bad, epochs=3, batch_size=len(bad), verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN()]).history
    assert np.isnan(history["loss"][0]) and len(history["loss"]) == 1


def test_evaluate_reports_elbo_metrics(trained_vae, digits):
    _, x_test, _ = digits
    logs = trained_vae.evaluate(x_test, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "elbo", "kl", "reconstruction"}
    assert logs["elbo"] == pytest.approx(-(logs["kl"] + logs["reconstruction"]), rel=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(latent_dim=0), "latent_dim must be a positive integer, got 0"),
    (dict(beta=-1.0), "beta must be a non-negative finite number, got -1.0"),
    (dict(objective="vi"), "objective must be one of"),
    (dict(num_train_samples=0), "num_train_samples must be a positive integer, got 0"),
    (dict(kl="closed"), "kl must be one of"),
])
def test_vae_arguments_are_checked(kwargs, message):
    enc, dec = tfp_vae.networks.build("mlp", 2, (4,), hidden=(8,))
    args = dict(latent_dim=2) | kwargs
    with pytest.raises(ValueError, match=message):
        tfp_vae.VAE(enc, dec, **args)


def test_decoder_shape_mismatch_is_reported():
    enc, _ = tfp_vae.networks.build("mlp", 2, (8, 8, 1), hidden=(8,))
    _, dec = tfp_vae.networks.build("mlp", 2, (4, 4, 1), hidden=(8,))
    with pytest.raises(ValueError, match=r"decoder maps z to shape \(4, 4, 1\), but the data has shape \(8, 8, 1\)"):
        tfp_vae.VAE(enc, dec, 2)


def test_xla_training_learns_the_same_model(digits):
    """jit_compile=True (tfp-vae train --jit-compile true) changes float rounding, not the result."""
    x, x_test, _ = digits
    histories, scores = [], []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = make_vae(latent=2, hidden=(32,), posterior="tril")
        model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=jit)
        assert model.jit_compile == jit
        histories.append(model.fit(x, epochs=3, batch_size=64, verbose=0, shuffle=False).history["loss"])
        scores.append(model.elbo(x_test, seed=1).numpy())
    # Same seeds, same batches: the first epoch agrees to float rounding; later epochs
    # drift apart as any two runs of SGD do, but the learned model scores the same.
    np.testing.assert_allclose(histories[1][0], histories[0][0], rtol=2e-3)
    np.testing.assert_allclose(scores[1].mean(), scores[0].mean(), rtol=0.02)


def test_train_config_checks_jit_compile():
    from tfp_vae.config import TrainConfig

    assert TrainConfig().jit_compile is False
    with pytest.raises(ValueError, match="jit_compile='yes' is not valid; expected true or false"):
        TrainConfig(jit_compile="yes").validate()


def _raw_scale(scale, target):
    """The raw head output b with scale(b) = target, by bisection (scale is increasing)."""
    lo, hi = -5.0, 5.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(scale(tf.constant(mid, tf.float64))) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _vae_whose_posterior_is_the_prior(posterior):
    """A VAE whose q(z|x) is N(0, I) for every x: head kernel zero, L' zero, sigma = 1.

    An untrained iaf maps z to c z, c = sigmoid(gate_bias)^steps (zero output weights), so
    its base gets sigma = 1 / c.
    """
    keras.utils.set_random_seed(0)
    model = make_vae(latent=3, shape=(6,), hidden=(8,), posterior=posterior, kl="path")
    family = model.posterior_family
    head = model.posterior_head
    head.kernel.assign(tf.zeros_like(head.kernel))
    bias = np.zeros(head.bias.shape, np.float32)
    if posterior == "iaf":
        c = (1.0 / (1.0 + math.exp(-family.gate_bias))) ** family.num_steps
        bias[3:6] = _raw_scale(tfp_vae.posteriors.softplus_scale, 1.0 / c)
    else:
        bias[3:6] = _raw_scale(family.SCALE, 1.0)
    head.bias.assign(bias)
    return model


@pytest.mark.parametrize("posterior", ["diag", "tril", "tril_source", "iaf"])
def test_path_kl_has_the_sampled_value_and_no_gradient_noise_at_the_optimum(posterior):
    """kl="path": the sampled KL's value; its gradient is (grad_z log p - grad_z log q) dz/dweights.

    With q(z|x) equal to the prior N(0, I), grad_z log p(z) - grad_z log q(z) = -z + z = 0
    for every sample, so the path-derivative gradient of the KL term is zero sample by
    sample (Roeder et al., 2017) -- for the flow's weights too -- while the ordinary
    sampled estimate's gradient is not.
    """
    x = tf.constant(np.random.default_rng(5).uniform(size=(5, 6)) > 0.5, tf.float32)
    seed = tf.constant([3, 4])
    grads, values = {}, {}
    for kl in ("path", "sampled"):
        model = _vae_whose_posterior_is_the_prior(posterior)
        model.kl = kl
        model._kl_method = model._resolve_kl_method()
        assert model.kl_method == kl
        weights = model.posterior_head.trainable_weights
        if posterior == "iaf":
            weights = weights + model.posterior_family.trainable_weights
        with tf.GradientTape() as tape:
            kl_sum = tf.reduce_sum(model._terms(x, seed, training=True)["kl"])
        grads[kl] = tape.gradient(kl_sum, weights)
        # Away from the optimum both give the same value, log q(z|x) - log p(z) at the same z.
        rng = np.random.default_rng(6)
        for w in [model.posterior_head.kernel] + (model.posterior_family.trainable_weights
                                                   if posterior == "iaf" else []):
            w.assign(w + 0.3 * rng.normal(size=w.shape))
        values[kl] = model._terms(x, seed, training=True)["kl"].numpy()
    np.testing.assert_allclose(values["path"], values["sampled"], rtol=1e-4, atol=1e-4)
    assert np.abs(values["path"]).max() > 0.1  # one sample: the estimate itself is noisy
    for g in grads["path"]:
        np.testing.assert_allclose(0.0 if g is None else g.numpy(), 0.0, atol=1e-4)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in grads["sampled"] if g is not None) > 0.1


def test_a_family_can_name_its_kl_estimator(monkeypatch):
    family = type("PathTrilSource", (tfp_vae.posteriors.FullCovarianceGaussian,),
                  {"name": "pathtrilsource_test", "KL_ESTIMATOR": "path"})
    monkeypatch.setitem(tfp_vae.posteriors._FAMILIES, family.name, family)
    assert make_vae(posterior=family.name).kl_method == "path"
    assert make_vae(posterior=family.name, kl="analytic").kl_method == "analytic"
    sampled = type("SampledDiag", (tfp_vae.posteriors.DiagonalGaussian,),
                   {"name": "sampleddiag_test", "KL_ESTIMATOR": "sampled"})
    monkeypatch.setitem(tfp_vae.posteriors._FAMILIES, sampled.name, sampled)
    assert make_vae(posterior=sampled.name).kl_method == "sampled"
    assert make_vae(posterior="diag").kl_method == "path"
    assert make_vae(posterior="tril_source").kl_method == "analytic"


def test_steps_per_execution_trains_the_same_model(digits):
    """steps_per_execution (tfp-vae train --steps-per-execution N) runs the same steps with
    the same seeds, only fewer calls into TensorFlow: the same weights to float rounding."""
    x, _, _ = digits
    x = x[:480]  # 10 steps of 48 an epoch: executions of 4, 4 and 2 steps
    weights, histories = [], []
    for spe in (1, 4):
        keras.utils.set_random_seed(0)
        model = make_vae(latent=2, hidden=(32,), posterior="diag")
        model.compile(optimizer=keras.optimizers.Adam(3e-3), steps_per_execution=spe)
        histories.append(model.fit(x, epochs=2, batch_size=48, verbose=0, shuffle=False).history["loss"])
        weights.append([w.numpy() for w in model.weights])
    assert int(model.optimizer.iterations.numpy()) == 2 * 10
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)
    for a, b in zip(weights[0], weights[1]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_train_config_checks_steps_per_execution():
    from tfp_vae.config import TrainConfig

    assert TrainConfig().steps_per_execution == 1
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=f"steps_per_execution={bad!r} is not valid; expected a positive integer"):
            TrainConfig(steps_per_execution=bad).validate()


def test_kl_warmup_refuses_steps_per_execution(digits):
    """The KL ramp is set before every step; with several steps per execution it would
    move only between executions, so the combination is refused, not run differently."""
    from tfp_vae.config import TrainConfig

    x, _, _ = digits
    model = make_vae(latent=2, hidden=(8,), kl_warmup_epochs=2)
    model.compile(optimizer="adam", steps_per_execution=4)
    with pytest.raises(ValueError, match="kl_warmup_epochs=2 .* needs steps_per_execution=1; .*=4"):
        model.fit(x[:64], epochs=1, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match="steps_per_execution=4 is not valid with kl_warmup_epochs=3"):
        TrainConfig(kl_warmup_epochs=3, steps_per_execution=4).validate()
    TrainConfig(kl_warmup_epochs=3, steps_per_execution=1).validate()
