"""The conv network's faster layers change the speed, not the learned result.

tfp_vae's conv decoder computes its first transposed convolution in sub-pixel form
(``networks.SubpixelConv2DTranspose``) and its last convolution's gradient as a
convolution and a matrix product (``networks.SameConv2D``). This trains the same conv VAE
(latent 2, mnist5k padded to 32x32, first 3,600 training digits, dynamic binarization,
batch 100, Adam 1e-3) twice per seed from the same initial weights: once with tfp_vae's
decoder, once with the same decoder rebuilt from Keras' stock Conv2D/Conv2DTranspose,
and scores both on the 1,000 test digits by importance sampling. The two should differ
by no more than two seeds of the same implementation differ.

First it times the two layers against Keras' at batch 100 (median ms of ``--repeats``
calls of a compiled function, the forms interleaved): the last layer's forward and
backward pass (32x32x32 -> 32x32x1), and the first transposed convolution's forward pass
(4x4x128 -> 8x8x128) and forward and backward pass; and the sub-pixel form's forward pass
at the next two transposed convolutions' sizes, where the decoder keeps Keras' layer.

Usage:
  python bench/bench_conv_layers.py --epochs 10 --seeds 0 1
  python bench/bench_conv_layers.py --epochs 0        # the layer timings only
"""

import argparse
import time

import tensorflow as tf

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import keras
import numpy as np

import tfp_vae
from tfp_vae import data as data_lib


def stock_decoder(decoder):
    """The same decoder built from Keras' own layer classes, with the same weights."""
    layers = [keras.Input(shape=decoder.input_shape[1:])]
    for layer in decoder.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            cls = keras.layers.Conv2DTranspose
        elif isinstance(layer, keras.layers.Conv2D):
            cls = keras.layers.Conv2D
        else:
            cls = type(layer)
        layers.append(cls.from_config(layer.get_config()))
    stock = keras.Sequential(layers, name=decoder.name)
    stock.set_weights(decoder.get_weights())
    return stock


def _timed(fn, x, repeats):
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [t.numpy() for t in tf.nest.flatten(fn(x))]
        times.append(1e3 * (time.perf_counter() - start))
    return times


def time_layers(repeats=15, batch=100):
    """Median ms of tfp_vae's layer and Keras' with the same weights, side by side."""
    _, decoder = tfp_vae.networks.build("conv", 2, (32, 32, 1))
    stock = stock_decoder(decoder)

    def pair(i):  # the decoder's layer i and its stock twin
        return {"tfp_vae": decoder.layers[i], "keras": stock.layers[i]}

    cases = [("last conv 32->1, forward + backward", pair(-1), (batch, 32, 32, 32), True),
             ("first transposed conv 4x4x128, forward", pair(2), (batch, 4, 4, 128), False),
             ("first transposed conv 4x4x128, forward + backward", pair(2), (batch, 4, 4, 128), True)]
    # The decoder uses the sub-pixel form only from a 4x4 input; at the next two sizes
    # this times what it would cost there (a sub-pixel layer with those layers' weights).
    for index, shape in ((3, (batch, 8, 8, 128)), (4, (batch, 16, 16, 64))):
        layer = stock.layers[index]
        sub = tfp_vae.networks.SubpixelConv2DTranspose.from_config(layer.get_config())
        sub.build(shape)
        sub.set_weights(layer.get_weights())
        cases.append((f"transposed conv {shape[1]}x{shape[1]}x{shape[3]}, forward (not used)",
                      {"tfp_vae": sub, "keras": layer}, shape, False))
    rng = np.random.default_rng(0)
    for label, layers, shape, backward in cases:
        x = tf.constant(rng.normal(size=shape), tf.float32)
        fns = {}
        for impl, layer in layers.items():

            def step(x, layer=layer, backward=backward):
                if not backward:
                    return layer(x)
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(tf.square(layer(x)))
                return tape.gradient(loss, [x, *layer.trainable_weights])

            fns[impl] = tf.function(step, autograph=False)
        times = {impl: [] for impl in fns}
        for _ in range(3):  # interleaved blocks, so drifting load falls on both
            for impl, fn in fns.items():
                times[impl] += _timed(fn, x, repeats // 3 or 1)
        ours, theirs = (_common.median(times[k]) for k in ("tfp_vae", "keras"))
        print(f"  {label:52s} tfp_vae {ours:6.1f} ms   keras {theirs:6.1f} ms   "
              f"({theirs / ours:.2f}x)", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--num-samples", type=int, default=200, help="k for the log p(x) estimate")
    p.add_argument("--repeats", type=int, default=45, help="timed calls per layer and form")
    args = p.parse_args(argv)
    _common.print_environment()
    print(f"layer timings, batch 100, median ms of {args.repeats} calls, load {_common.load_average()}")
    time_layers(args.repeats)
    if args.epochs <= 0:
        return {}
    (x, _), (x_test, _) = data_lib.load("mnist5k", pad=True)
    x = x[:3600]
    scores = {}
    for seed in args.seeds:
        for impl in ("tfp_vae", "keras"):
            keras.utils.set_random_seed(seed)
            encoder, decoder = tfp_vae.networks.build("conv", 2, x.shape[1:])
            if impl == "keras":
                decoder = stock_decoder(decoder)
            model = tfp_vae.VAE(encoder, decoder, 2, seed=seed)
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
            start = time.perf_counter()
            model.fit(data_lib.binarized_batches(x, 100, seed=seed), epochs=args.epochs, verbose=0)
            seconds = time.perf_counter() - start
            ll = float(np.mean(model.log_likelihood(x_test, num_samples=args.num_samples, seed=0)))
            scores[seed, impl] = ll
            print(f"seed {seed} {impl:8s} layers: log p(x) {ll:.2f} nats (k={args.num_samples}), "
                  f"train {seconds:.0f} s, load {_common.load_average()}", flush=True)
    diffs = [scores[s, "tfp_vae"] - scores[s, "keras"] for s in args.seeds]
    print("tfp_vae - keras layers, per seed: " + ", ".join(f"{d:+.2f}" for d in diffs))
    for impl in ("tfp_vae", "keras"):
        values = [scores[s, impl] for s in args.seeds]
        print(f"{impl} layers across seeds: range {max(values) - min(values):.2f} nats")
    return scores


if __name__ == "__main__":
    main()
