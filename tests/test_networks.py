"""The networks' own layers: Keras' Conv2D and Conv2DTranspose with faster ops, same results."""

import numpy as np
import pytest

import tfp_vae
from tfp_vae._backend import keras, tf


def assert_same_outputs_and_gradients(ours, theirs, x, loss_of_output):
    """Outputs and gradients (input, weights) of two layers with the same weights agree,
    eagerly and traced with the batch size unknown (as fit() and export run them)."""
    results = []
    for layer in (ours, theirs):
        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = loss_of_output(y)
            return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]
        results.append(step(x))
        spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
        results.append(tf.function(step, input_signature=[spec])(x))
    assert results[0][0].shape == results[2][0].shape
    for ours_out, *others in zip(*results):
        for other in others:
            np.testing.assert_allclose(ours_out.numpy(), other.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,filters,strides", [(3, 1, 1), ((5, 3), 2, 1), (3, 2, 2)])
def test_same_conv2d_is_keras_conv2d_with_the_same_gradients(kernel_size, filters, strides):
    # The conv decoder's last layer: Keras' Conv2D whose stride-1 'same' gradient is a
    # convolution and a matrix product (networks.same_conv2d); other strides are Keras'.
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 10, 7, 5)), tf.float32)
    ours = tfp_vae.networks.SameConv2D(filters, kernel_size, strides=strides, padding="same")
    theirs = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same")
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    weights = tf.constant(np.random.default_rng(1).normal(size=ours.compute_output_shape(x.shape)),
                          tf.float32)
    assert_same_outputs_and_gradients(ours, theirs, x, lambda y: tf.reduce_sum(tf.sin(y) * weights))
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(again) is tfp_vae.networks.SameConv2D and again.get_config() == ours.get_config()
    _, dec = tfp_vae.networks.build("conv", 2, (32, 32, 1))
    assert type(dec.layers[-1]) is tfp_vae.networks.SameConv2D


@pytest.mark.parametrize("shape,kernel_size,strides", [((4, 4, 6), 3, 2), ((3, 5, 2), 3, 2),
                                                       ((4, 4, 3), 5, 2), ((4, 4, 3), 3, 1)])
def test_subpixel_conv2d_transpose_is_keras_conv2d_transpose(shape, kernel_size, strides):
    # The conv decoder's first transposed convolution: Keras' layer computed in sub-pixel
    # form (3x3, stride 2); other kernels and strides are Keras' own.
    x = tf.constant(np.random.default_rng(2).normal(size=(3, *shape)), tf.float32)
    ours = tfp_vae.networks.SubpixelConv2DTranspose(4, kernel_size, strides=strides,
                                                     padding="same", activation="relu")
    theirs = keras.layers.Conv2DTranspose(4, kernel_size, strides=strides, padding="same",
                                          activation="relu")
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights([w + 0.1 for w in ours.get_weights()])  # a non-zero bias too
    ours.set_weights(theirs.get_weights())
    weights = tf.constant(np.random.default_rng(3).normal(size=ours.compute_output_shape(x.shape)),
                          tf.float32)
    assert_same_outputs_and_gradients(ours, theirs, x, lambda y: tf.reduce_sum(y * weights))
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(again) is tfp_vae.networks.SubpixelConv2DTranspose
    _, dec = tfp_vae.networks.build("conv", 2, (32, 32, 1))
    transposed = [type(l).__name__ for l in dec.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    assert transposed == ["SubpixelConv2DTranspose", "Conv2DTranspose", "Conv2DTranspose"]
    for shape in ((64, 64, 1), (32, 64, 1), (64, 32, 1)):  # an input side of 8: Keras' layer
        _, dec = tfp_vae.networks.build("conv", 2, shape)
        assert not any(type(l).__name__.startswith("Subpixel") for l in dec.layers), shape
