"""The decoder's output bias started at the data's mean (networks.initialize_output_bias)."""

import argparse
import dataclasses

import numpy as np
import pytest

from tfp_vae import cli, likelihoods, networks, train
from tfp_vae._backend import keras
from tfp_vae.config import TrainConfig


def _grey_images(shape=(20, 8, 8, 1), seed=0):
    """Grey levels in [0, 1] with an always-black first row, as MNIST's border."""
    x = np.random.default_rng(seed).uniform(size=shape).astype(np.float32) ** 2
    x[:, 0] = 0.0
    return x


def _zero_output_kernel(decoder):
    layer = networks._output_layer(decoder)
    layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))


@pytest.mark.parametrize("mean", [0.0, 1e-4, 0.2, 0.5, 0.97, 1.0])
def test_bernoulli_inverse_mean_is_the_clipped_logit(mean):
    logit = likelihoods.Bernoulli().inverse_mean(np.array([mean]))
    p = min(max(mean, likelihoods.MEAN_CLIP), 1 - likelihoods.MEAN_CLIP)
    assert logit.dtype == np.float32
    np.testing.assert_allclose(logit, [np.log(p) - np.log1p(-p)], rtol=1e-6)
    # and the likelihood's own mean maps it back
    np.testing.assert_allclose(likelihoods.Bernoulli().mean(logit).numpy(), [p], rtol=1e-5)


def test_gaussian_inverse_mean_follows_its_mean_activation():
    m = np.array([0.1, 0.5, 0.9], np.float32)
    sigmoid = likelihoods.Gaussian(mean_activation="sigmoid")
    np.testing.assert_allclose(sigmoid.mean(sigmoid.inverse_mean(m)).numpy(), m, rtol=1e-5)
    linear = likelihoods.Gaussian(mean_activation="linear")
    np.testing.assert_array_equal(linear.inverse_mean(np.array([-3.0, 7.5])), [-3.0, 7.5])


@pytest.mark.parametrize("network", ["mlp", "linear"])
def test_dense_decoder_starts_at_each_pixels_mean(network):
    # With the output kernel zeroed the decoder's output is its bias alone: the per-pixel
    # mean of x through the Bernoulli mean, clipped where a pixel is always 0.
    x = _grey_images()
    _, decoder = networks.build(network, 3, x.shape[1:], (16,))
    bias = networks.initialize_output_bias(decoder, likelihoods.Bernoulli().inverse_mean, x)
    assert bias.shape == (64,)
    _zero_output_kernel(decoder)
    mean = likelihoods.Bernoulli().mean(decoder(np.random.default_rng(1).normal(size=(5, 3)))).numpy()
    expected = np.clip(x.mean(axis=0), likelihoods.MEAN_CLIP, 1 - likelihoods.MEAN_CLIP)
    np.testing.assert_allclose(mean, np.broadcast_to(expected, mean.shape), rtol=1e-5)
    assert np.allclose(mean[:, 0], likelihoods.MEAN_CLIP)


def test_conv_decoder_gets_one_bias_per_channel():
    x = _grey_images((6, 8, 8, 2))
    _, decoder = networks.build("conv", 3, x.shape[1:])
    bias = networks.initialize_output_bias(decoder, likelihoods.Bernoulli().inverse_mean, x)
    expected = [np.log(x[..., c].mean()) - np.log1p(-x[..., c].mean()) for c in range(2)]
    np.testing.assert_allclose(bias, expected, rtol=1e-5)
    # the decoder's own output, with its last kernel zeroed, is that bias at every position
    _zero_output_kernel(decoder)
    out = decoder(np.random.default_rng(1).normal(size=(3, 3))).numpy()
    np.testing.assert_allclose(out, np.broadcast_to(np.float32(expected), out.shape), rtol=1e-5)


def test_initialize_output_bias_rejects_what_it_cannot_set():
    x = _grey_images()
    inverse = likelihoods.Bernoulli().inverse_mean
    _, decoder = networks.build("mlp", 3, x.shape[1:], (16,))
    with pytest.raises(ValueError, match=r"bias of shape \(64,\); expected \(32,\)"):
        networks.initialize_output_bias(decoder, inverse, x[:, :4])
    with pytest.raises(ValueError, match="non-empty batch"):
        networks.initialize_output_bias(decoder, inverse, x[:0])
    no_bias = keras.Sequential([keras.Input((3,)), keras.layers.Dense(64, use_bias=False)])
    with pytest.raises(ValueError, match="has no bias"):
        networks.initialize_output_bias(no_bias, inverse, x)
    with pytest.raises(NotImplementedError, match="Likelihood does not define inverse_mean"):
        networks.initialize_output_bias(decoder, likelihoods.Likelihood().inverse_mean, x)
    nan = x.copy()
    nan[0, 1, 1] = np.nan
    before = networks._output_layer(decoder).bias.numpy()
    with pytest.raises(ValueError, match="not finite"):
        networks.initialize_output_bias(decoder, inverse, nan)
    np.testing.assert_array_equal(networks._output_layer(decoder).bias.numpy(), before)


def _decoder_bias(model):
    return networks._output_layer(model.decoder).bias.numpy()


def test_build_model_starts_a_vae_at_the_data_mean_when_told():
    x = _grey_images()
    config = TrainConfig(dataset="digits", hidden=(8,), latent_dim=2, output_bias="data-mean")
    expected = likelihoods.Bernoulli().inverse_mean(x.reshape(len(x), -1).mean(axis=0, dtype=np.float64))
    np.testing.assert_allclose(_decoder_bias(train.build_model(config, x.shape[1:], x=x)), expected)
    # no data (a saved run rebuilt for its weights) or the default "zeros": Keras' zero bias
    assert not _decoder_bias(train.build_model(config, x.shape[1:])).any()
    zeros = TrainConfig(dataset="digits", hidden=(8,), latent_dim=2)
    assert zeros.output_bias == "zeros"
    assert not _decoder_bias(train.build_model(zeros, x.shape[1:], x=x)).any()
    # the autoencoder keeps Keras' initialization, and refuses the data-mean start
    ae = TrainConfig(dataset="digits", hidden=(8,), latent_dim=2, model="ae")
    assert not _decoder_bias(train.build_model(ae, x.shape[1:], x=x)).any()
    with pytest.raises(ValueError, match="output_bias='data-mean' is not valid with model='ae'"):
        dataclasses.replace(ae, output_bias="data-mean").validate()


def test_output_bias_flag_and_config_check():
    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    args = parser.parse_args(["--out", "r", "--output-bias", "data-mean"])
    assert args.output_bias == "data-mean"
    assert TrainConfig().output_bias == "zeros"
    with pytest.raises(ValueError, match=r"output_bias='mean' is not valid; expected one of \['zeros', 'data-mean'\]"):
        TrainConfig(output_bias="mean").validate()


def test_a_training_run_starts_from_the_data_mean_and_records_it(tmp_path):
    # Adam moves each bias by at most about 3.2 learning rates per step (lr (1 - b1) /
    # sqrt(1 - b2) in its first steps), so after one short
    # epoch a data-mean run's output bias is still near the inverse mean of its training
    # split, and a default run's still near zero.
    biases = {}
    for start in ("data-mean", "zeros"):
        config = TrainConfig(dataset="digits", hidden=(8,), epochs=1, batch_size=256, eval_samples=2,
                             eval_examples=4, pictures=False, output_bias=start)
        train.run(config, tmp_path / start, verbose=0)
        model, saved = train.load_run(tmp_path / start)
        assert saved.output_bias == start
        biases[start] = _decoder_bias(model)
    (x_train, _), _, _ = train.load_splits(config)
    steps = -(-len(x_train) // config.batch_size)
    expected = likelihoods.Bernoulli().inverse_mean(x_train.reshape(len(x_train), -1).mean(axis=0))
    moved = 4 * steps * config.learning_rate
    assert np.abs(biases["data-mean"] - expected).max() < moved
    assert np.abs(biases["zeros"]).max() < moved
    assert np.abs(expected).max() > 10 * moved  # so the two checks tell the starts apart
