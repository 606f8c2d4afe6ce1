"""PCA is the linear special case: a linear autoencoder against scikit-learn's PCA.

Trains ``tfp_vae.Autoencoder`` with the "linear" network (Flatten -> linear code of k
units -> one Dense layer), no activation, MSE loss, on mnist5k's training digits, fits
``sklearn.decomposition.PCA(k)`` on the same digits, and reports

  * the principal angles between the decoder's column space and the PCA subspace;
  * the test reconstruction error (sum of squares per digit) of both;

and writes a picture: test digits (top row), their PCA reconstructions (middle) and the
linear autoencoder's (bottom).

Usage:
  python bench/bench_pca.py --components 16 --out pca.png
"""

import argparse
import time

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import numpy as np
import scipy.linalg
from sklearn.decomposition import PCA

import tfp_vae
from tfp_vae import plots
from tfp_vae._backend import keras


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--components", type=int, default=16)
    p.add_argument("--epochs", type=int, nargs=2, default=[30, 10],
                   help="epochs at learning rate 1e-2, then at 1e-3 (default 30 10)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="pca.png")
    args = p.parse_args(argv)
    _common.print_environment()
    (x, _), (x_test, _) = tfp_vae.data.load("mnist5k")
    flat, flat_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    k = args.components

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    encoder, decoder = tfp_vae.networks.build("linear", k, x.shape[1:])
    model = tfp_vae.Autoencoder(encoder, decoder, k, loss="mse", seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    for learning_rate, epochs in zip((1e-2, 1e-3), args.epochs):
        model.optimizer.learning_rate.assign(learning_rate)
        model.fit(x, epochs=epochs, batch_size=args.batch_size, verbose=0)
    seconds = time.perf_counter() - start

    pca = PCA(k).fit(flat)
    (dense,) = [l for l in decoder.layers if isinstance(l, keras.layers.Dense)]
    angles = np.degrees(scipy.linalg.subspace_angles(dense.kernel.numpy().T, pca.components_.T))
    pca_test = pca.inverse_transform(pca.transform(flat_test))
    ae_test = model.reconstruct(x_test).numpy().reshape(len(x_test), -1)
    pca_err = np.mean(np.sum((pca_test - flat_test) ** 2, axis=1))
    ae_err = np.mean(np.sum((ae_test - flat_test) ** 2, axis=1))
    print(f"mnist5k, {len(x)} training digits, k={k}; linear autoencoder trained in {seconds:.0f} s "
          f"(Adam 1e-2 x {args.epochs[0]} epochs, 1e-3 x {args.epochs[1]}, batch {args.batch_size})")
    print("principal angles, decoder column space vs PCA subspace (degrees): "
          + " ".join(f"{a:.2f}" for a in sorted(angles)))
    print(f"largest {angles.max():.2f}, median {np.median(angles):.2f}")
    print(f"test reconstruction error (sum of squares per digit): PCA {pca_err:.3f}, "
          f"linear autoencoder {ae_err:.3f} ({100 * (ae_err / pca_err - 1):+.2f}%)")

    plt = plots._pyplot()
    n = 10
    rows = np.concatenate([x_test[:n], pca_test[:n].reshape(x_test[:n].shape),
                           ae_test[:n].reshape(x_test[:n].shape)])
    fig, ax = plt.subplots(figsize=(n, 3.3))
    ax.imshow(np.clip(plots._tile(rows, n), 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"test digits; PCA(k={k}) reconstructions; linear autoencoder's "
                 f"(largest principal angle {angles.max():.1f} deg)")
    plots._save(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
