"""The conv network's faster layers change the speed, not the learned result.

tfp_vae's conv decoder computes its first transposed convolution in sub-pixel form
(``networks.SubpixelConv2DTranspose``) and its last convolution's gradient as a
convolution and a matrix product (``networks.SameConv2D``). This trains the same conv VAE
(latent 2, mnist5k padded to 32x32, first 3,600 training digits, dynamic binarization,
batch 100, Adam 1e-3) twice per seed from the same initial weights: once with tfp_vae's
decoder, once with the same decoder rebuilt from Keras' stock Conv2D/Conv2DTranspose,
and scores both on the 1,000 test digits by importance sampling. The two should differ
by no more than two seeds of the same implementation differ.

Usage:
  python bench/bench_conv_layers.py --epochs 10 --seeds 0 1
"""

import argparse
import time

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--num-samples", type=int, default=200, help="k for the log p(x) estimate")
    args = p.parse_args(argv)
    _common.print_environment()
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
