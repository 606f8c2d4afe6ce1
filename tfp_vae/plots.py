"""Pictures of what a model learned (PNG files, matplotlib's Agg backend).

* ``reconstructions.png``: originals (top row) over their reconstructions;
* ``samples.png``: decoded draws from the prior (VAE);
* ``latent.png``: test codes coloured by label (first two principal components when
  the latent has more than two dimensions);
* ``latent_grid.png``: for 2-D latents, images decoded over a grid of the latent plane
  (spanning draws from the prior for a VAE, the test codes for an autoencoder);
* ``curves.png``: training and validation curves of every metric.
"""

import math
import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _image(x):
    """[H, W, C] -> 2-D (grey) or 3-D (colour) array for imshow."""
    x = np.asarray(x)
    return x[..., 0] if x.shape[-1] == 1 else x


def _tile(images, cols):
    """Lays [N, H, W, C] images out in a grid with `cols` columns."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / cols)
    canvas = np.ones((rows * h, cols * w) + images.shape[3:], images.dtype)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return _image(canvas)


def _save(fig, path):
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def reconstructions(model, x, path, n=10):
    plt = _pyplot()
    x = np.asarray(x[:n], np.float32)
    recon = np.asarray(model.reconstruct(x))
    fig, ax = plt.subplots(figsize=(n, 2.2))
    ax.imshow(np.clip(_tile(np.concatenate([x, recon]), n), 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("originals (top) and reconstructions (bottom)")
    return _save(fig, path)


def samples(model, path, n=64, seed=0):
    plt = _pyplot()
    images = np.asarray(model.sample(n, seed=seed))
    cols = int(math.ceil(math.sqrt(n)))
    fig, ax = plt.subplots(figsize=(cols, cols))
    ax.imshow(np.clip(_tile(images, cols), 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("samples from the prior")
    return _save(fig, path)


def project_2d(codes):
    """First two principal components of codes (identity for 2-D codes)."""
    codes = np.asarray(codes, np.float64)
    if codes.shape[1] <= 2:
        return codes, False
    centred = codes - codes.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, True


def latent_scatter(model, x, y, path, max_points=5000):
    plt = _pyplot()
    x, y = x[:max_points], np.asarray(y[:max_points])
    codes = np.concatenate([np.asarray(model.encode(x[i : i + 500])) for i in range(0, len(x), 500)])
    points, projected = project_2d(codes)
    fig, ax = plt.subplots(figsize=(7, 6))
    if points.shape[1] == 1:
        points = np.concatenate([points, np.zeros_like(points)], axis=1)
    labelled = y >= 0
    sc = ax.scatter(points[:, 0], points[:, 1], c=np.where(labelled, y, 0), cmap="tab10", s=4)
    if labelled.any():
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel("PC 1" if projected else "z[0]")
    ax.set_ylabel("PC 2" if projected else "z[1]")
    ax.set_title("latent codes of test data" + (" (PCA projection)" if projected else ""))
    return _save(fig, path)


def latent_grid(model, codes, path, n=15):
    """Decoded images over a grid of the 2-D latent plane spanning ``codes`` (2nd-98th pct)."""
    plt = _pyplot()
    lo, hi = np.percentile(np.asarray(codes), [2, 98], axis=0)
    axis0, axis1 = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    grid = np.array([[a, b] for b in axis1[::-1] for a in axis0], np.float32)
    images = np.asarray(model.decode_mean(grid))
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(np.clip(_tile(images, n), 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("decoded latent plane")
    return _save(fig, path)


def curves(history, path):
    plt = _pyplot()
    names = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def save_all(model, history, test, out_dir, seed=0):
    """Writes every picture that applies to ``model`` into ``out_dir``; returns the paths."""
    from tfp_vae.vae import VAE

    os.makedirs(out_dir, exist_ok=True)
    x, y = test
    is_vae = isinstance(model, VAE)
    paths = [
        reconstructions(model, x, os.path.join(out_dir, "reconstructions.png")),
        latent_scatter(model, x, y, os.path.join(out_dir, "latent.png")),
    ]
    if is_vae:
        paths.append(samples(model, os.path.join(out_dir, "samples.png"), seed=seed))
    if model.latent_dim == 2:
        codes = model.prior().sample(2000, seed=[seed, 1]) if is_vae else model.encode(x[:1000])
        paths.append(latent_grid(model, codes, os.path.join(out_dir, "latent_grid.png")))
    if history:
        paths.append(curves(history, os.path.join(out_dir, "curves.png")))
    return paths
