"""Encoder and decoder networks.

Encoders map x to a feature vector (the model adds the head that emits posterior
parameters or the code); decoders map z to one unconstrained number per data element
(logits or an unsquashed mean; the likelihood decides how to read them).

``mlp``   Flatten -> Dense(h, relu) for each hidden size; the decoder mirrors it.
``linear`` Flatten; the decoder is one Dense layer and a Reshape. With the models' linear
          code layer and an MSE loss this is the autoencoder whose optimum spans the
          principal subspace: PCA as the linear special case (tests/test_pca.py).
``conv``  The source's 32x32 network: Conv2D 32/64/128, 3x3, stride 2, ReLU, same
          padding -> Flatten; decoder Dense(H/8 * W/8 * 128) -> Reshape ->
          Conv2DTranspose 128/64/32 stride 2 -> Conv2D(channels). Needs H and W
          divisible by 8 (pad 28x28 digits to 32x32).
          Its last layer is a ``SameConv2D`` and, at 32x32, its first transposed
          convolution a ``SubpixelConv2DTranspose``: Keras' layers with the same weights
          and outputs, computed by faster ops (below).

Why ``SameConv2D``: the conv decoder ends in a 3x3 convolution from 32 channels to one.
TensorFlow's CPU gradient kernels for that shape (Conv2DBackpropInput and
Conv2DBackpropFilter with one output channel) ran at 2-3 GFLOP/s on the 2-core AMD
EPYC here (a large matmul: about 100), so that layer alone took a fifth to a quarter of
the conv model's training step.
Its gradient is the same mathematics as two ordinary ops: the input gradient is a
'same' convolution of the output gradient with the flipped, transposed kernel, and the
kernel gradient is one matrix product of the padded input with the output gradient
shifted to each tap.

Why ``SubpixelConv2DTranspose``: TensorFlow's CPU kernel for the forward pass of a
stride-2 3x3 transposed convolution from a 4x4 input (Conv2DBackpropInput) was slow here
for its 0.5 GFLOP at batch 100. The same output is a stride-1 2x2 convolution to four
times the channels, one group per output phase, rearranged by depth_to_space
("sub-pixel"): 16/9 the multiply-adds, but in an ordinary convolution kernel. From 8x8
and 16x16 inputs TensorFlow's kernel was the faster, so the decoder uses the sub-pixel
form only where its input is at most 4x4. The gradients stay TensorFlow's own (a stride-2
convolution and Conv2DBackpropFilter). ``bench/bench_conv_layers.py`` times both layers
against Keras' and ``bench/bench_speed.py`` the whole model; ``tests/test_networks.py``
checks outputs and gradients of both layers against Keras'.

``initialize_output_bias(decoder, inverse_mean, x)`` sets a decoder's output bias so
that, before training, the likelihood's mean is the training data's mean wherever the
rest of the output is zero: the logit of each pixel's mean for a Bernoulli likelihood
(one bias per data element for ``mlp`` and ``linear``, one per channel for ``conv``).
Without it the decoder starts at logit 0, every pixel grey. ``tfp_vae.train.build_model``
does this for VAEs when the config's ``output_bias`` is "data-mean" (``--output-bias
data-mean``). It is not the default: on mnist5k's MLP it raised held-out log-likelihood
by 1.2-1.9 nats at 30 epochs, but at 100 diag and iaf were level and tril 1.2 nats lower
(``bench/bench_quality.py --output-bias data-mean``, README Benchmarks).
"""

import math

import numpy as np

from tfp_vae._backend import keras, tf

CONV_FILTERS = (32, 64, 128)


def _check_shape(data_shape):
    data_shape = tuple(data_shape)
    if not data_shape or any((not isinstance(s, int)) or s <= 0 for s in data_shape):
        raise ValueError(f"data_shape must be positive integers, got {data_shape!r}.")
    return data_shape


def _check_hidden(hidden):
    hidden = tuple(hidden)
    if any((not isinstance(h, int)) or h <= 0 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}.")
    return hidden


def mlp_encoder(data_shape, hidden=(512, 256), name="encoder"):
    data_shape, hidden = _check_shape(data_shape), _check_hidden(hidden)
    layers = [keras.Input(shape=data_shape), keras.layers.Flatten()]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    return keras.Sequential(layers, name=name)


def mlp_decoder(latent_dim, data_shape, hidden=(256, 512), name="decoder"):
    data_shape, hidden = _check_shape(data_shape), _check_hidden(hidden)
    layers = [keras.Input(shape=(latent_dim,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers += [keras.layers.Dense(math.prod(data_shape)), keras.layers.Reshape(data_shape)]
    return keras.Sequential(layers, name=name)


@tf.custom_gradient
def same_conv2d(x, kernel):
    """``tf.nn.conv2d(x, kernel, 1, "SAME")`` for an odd kernel [kh, kw, C, O] on NHWC x,
    with its gradients computed as a convolution and a matrix product (module docstring)."""
    kh, kw, c, o = kernel.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2

    def grad(dy):
        # dx[p] = sum_t dy[p + ph - t] kernel[t]^T: a 'same' convolution of dy with the
        # kernel flipped in space and with its channel axes swapped.
        flipped = tf.reverse(tf.transpose(kernel, [0, 1, 3, 2]), [0, 1])
        dx = tf.nn.conv2d(dy, flipped, 1, "SAME")
        # dkernel[t, c, o] = sum_q xpad[q, c] dy[q - t, o], q over the padded grid: one
        # product of xpad [N, C] with dy shifted to every tap [N, kh * kw * O].
        xpad = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        shifted = tf.stack([tf.pad(dy, [[0, 0], [ty, kh - 1 - ty], [tx, kw - 1 - tx], [0, 0]])
                            for ty in range(kh) for tx in range(kw)], axis=-2)
        dk = tf.matmul(tf.reshape(xpad, [-1, c]), tf.reshape(shifted, [-1, kh * kw * o]),
                       transpose_a=True)
        return dx, tf.transpose(tf.reshape(dk, [c, kh, kw, o]), [1, 2, 0, 3])

    return tf.nn.conv2d(x, kernel, 1, "SAME"), grad


@keras.saving.register_keras_serializable(package="tfp_vae")
class SameConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D``, same weights, config and output; when it is a stride-1
    'same' convolution with an odd kernel (channels last, no dilation or groups) its
    gradient goes through ``same_conv2d``. Any other configuration is Keras' own."""

    def _fast(self):
        return (self.padding == "same" and self.data_format == "channels_last"
                and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
                and self.groups == 1 and all(k % 2 for k in self.kernel_size))

    def convolution_op(self, inputs, kernel):
        if self._fast():
            return same_conv2d(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))
        return super().convolution_op(inputs, kernel)


# Sub-pixel form of a stride-2 'same' transposed convolution with a 3x3 kernel, per
# axis: output 2m + a takes input m - 1 (window offset u = 0) and input m (u = 1),
# y[2m] = x[m] k[0] + x[m - 1] k[2] and y[2m + 1] = x[m] k[1]; (a, u) -> kernel tap.
_SUBPIXEL_TAP = {(0, 0): 2, (0, 1): 0, (1, 0): None, (1, 1): 1}


def _subpixel_kernel(kernel):
    """[3, 3, O, C] transposed-conv kernel -> [2, 2, C, 4 O] kernel of the stride-1 'valid'
    convolution over the input padded by one row and column at the top and left, whose
    output channels, in (row phase, column phase, O) order, depth_to_space into y."""
    taps = tf.transpose(kernel, [0, 1, 3, 2])  # [3, 3, C, O]
    zero = tf.zeros_like(taps[0, 0])
    rows = []
    for u in range(2):
        cols = []
        for v in range(2):
            groups = []
            for a in range(2):
                for b in range(2):
                    ty, tx = _SUBPIXEL_TAP[(a, u)], _SUBPIXEL_TAP[(b, v)]
                    groups.append(zero if ty is None or tx is None else taps[ty, tx])
            cols.append(tf.concat(groups, axis=-1))
        rows.append(tf.stack(cols))
    return tf.stack(rows)


@tf.custom_gradient
def subpixel_conv2d_transpose(x, kernel):
    """``tf.nn.conv2d_transpose(x, kernel, [B, 2H, 2W, O], 2, "SAME")`` for a 3x3 kernel
    [3, 3, O, C] on NHWC x, computed in sub-pixel form; the gradients are TensorFlow's."""
    padded = tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])
    y = tf.nn.depth_to_space(tf.nn.conv2d(padded, _subpixel_kernel(kernel), 1, "VALID"), 2)

    def grad(dy):
        dx = tf.nn.conv2d(dy, kernel, 2, "SAME")
        dk = tf.raw_ops.Conv2DBackpropFilter(
            input=dy, filter_sizes=tf.shape(kernel), out_backprop=x, strides=[1, 2, 2, 1],
            padding="SAME")
        return dx, dk

    return y, grad


@keras.saving.register_keras_serializable(package="tfp_vae")
class SubpixelConv2DTranspose(keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose``, same weights, config and output; a stride-2 'same'
    3x3 one (channels last, no dilation or output padding) runs its forward pass as
    ``subpixel_conv2d_transpose``. Any other configuration is Keras' own."""

    def _fast(self):
        return (tuple(self.kernel_size) == (3, 3) and tuple(self.strides) == (2, 2)
                and self.padding == "same" and self.data_format == "channels_last"
                and self.output_padding is None and tuple(self.dilation_rate) == (1, 1))

    def call(self, inputs):
        if not self._fast():
            return super().call(inputs)
        outputs = subpixel_conv2d_transpose(tf.convert_to_tensor(inputs),
                                            tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


def _check_conv_shape(data_shape):
    data_shape = _check_shape(data_shape)
    factor = 2 ** len(CONV_FILTERS)
    if len(data_shape) != 3 or data_shape[0] % factor or data_shape[1] % factor:
        raise ValueError(
            f"The conv network needs images of shape (H, W, C) with H and W divisible by "
            f"{factor}, got {data_shape!r}. Pad 28x28 digits to 32x32 (pad=True), or use "
            "the mlp network."
        )
    return data_shape


def conv_encoder(data_shape=(32, 32, 1), name="encoder"):
    data_shape = _check_conv_shape(data_shape)
    layers = [keras.Input(shape=data_shape)]
    layers += [
        keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")
        for f in CONV_FILTERS
    ]
    layers.append(keras.layers.Flatten())
    return keras.Sequential(layers, name=name)


def conv_decoder(latent_dim, data_shape=(32, 32, 1), name="decoder"):
    h, w, c = _check_conv_shape(data_shape)
    factor = 2 ** len(CONV_FILTERS)
    top = CONV_FILTERS[-1]
    layers = [
        keras.Input(shape=(latent_dim,)),
        keras.layers.Dense((h // factor) * (w // factor) * top, activation="relu"),
        keras.layers.Reshape((h // factor, w // factor, top)),
    ]
    rows, cols = h // factor, w // factor  # the first transposed convolution's input
    for f in reversed(CONV_FILTERS):
        subpixel = rows <= 4 and cols <= 4
        layer = SubpixelConv2DTranspose if subpixel else keras.layers.Conv2DTranspose
        layers.append(layer(f, 3, strides=2, padding="same", activation="relu"))
        rows, cols = 2 * rows, 2 * cols
    layers.append(SameConv2D(c, 3, padding="same"))
    return keras.Sequential(layers, name=name)


def linear_encoder(data_shape, name="encoder"):
    data_shape = _check_shape(data_shape)
    return keras.Sequential([keras.Input(shape=data_shape), keras.layers.Flatten()], name=name)


def linear_decoder(latent_dim, data_shape, name="decoder"):
    return mlp_decoder(latent_dim, data_shape, hidden=(), name=name)


_NETWORKS = {
    "mlp": (mlp_encoder, mlp_decoder),
    "conv": (conv_encoder, conv_decoder),
    "linear": (linear_encoder, linear_decoder),
}


def build(name, latent_dim, data_shape, hidden=None):
    """(encoder, decoder) for network ``name`` ("mlp" or "conv")."""
    if name not in _NETWORKS:
        raise ValueError(f"Unknown network {name!r}; expected one of {sorted(_NETWORKS)}.")
    if not isinstance(latent_dim, int) or latent_dim <= 0:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
    make_encoder, make_decoder = _NETWORKS[name]
    if name == "mlp":
        hidden = tuple(hidden) if hidden else (512, 256)
        return (
            make_encoder(data_shape, hidden),
            make_decoder(latent_dim, data_shape, tuple(reversed(hidden))),
        )
    return make_encoder(data_shape), make_decoder(latent_dim, data_shape)


def _output_layer(decoder):
    """The decoder's last layer that has weights (its output layer for these networks)."""
    for layer in reversed(decoder.layers):
        if layer.weights:
            return layer
    raise ValueError(f"decoder {decoder.name!r} has no layer with weights.")


def initialize_output_bias(decoder, inverse_mean, x):
    """Sets the bias of ``decoder``'s output layer to ``inverse_mean`` of x's mean.

    ``x``: training data [N, *data_shape]. ``inverse_mean``: the likelihood's (e.g.
    ``likelihoods.Bernoulli().inverse_mean``), mapping a mean to the decoder output that
    has it. A bias with one entry per data element gets the per-element mean over the N
    examples; a bias with one entry per channel (a final convolution) gets the mean over
    examples and positions. Returns the bias now set, as a NumPy array.
    """
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of examples [N, *data_shape], got shape {x.shape}.")
    layer = _output_layer(decoder)
    bias = getattr(layer, "bias", None)
    if bias is None:
        raise ValueError(f"the decoder's output layer {layer.name!r} has no bias to initialize.")
    shape, data_shape = tuple(bias.shape), x.shape[1:]
    if shape == (math.prod(data_shape),):
        mean = x.reshape(len(x), -1).mean(axis=0, dtype=np.float64)
    elif shape == (data_shape[-1],):
        mean = x.reshape(-1, data_shape[-1]).mean(axis=0, dtype=np.float64)
    else:
        raise ValueError(
            f"the decoder's output layer {layer.name!r} has a bias of shape {shape}; expected "
            f"({math.prod(data_shape)},), one per element of the data shape {data_shape}, or "
            f"({data_shape[-1]},), one per channel."
        )
    value = np.asarray(inverse_mean(mean), np.float32).reshape(shape)
    if not np.all(np.isfinite(value)):
        raise ValueError("the output bias from the data's mean is not finite; is x finite?")
    bias.assign(value)
    return value


def names():
    return sorted(_NETWORKS)
