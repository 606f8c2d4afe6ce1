"""Datasets: shipped ones load offline, files load, missing files are named."""

import numpy as np
import pytest

from tfp_vae import data


def test_mnist5k_is_real_shipped_mnist_with_a_fixed_stratified_split():
    (x_train, y_train), (x_test, y_test) = data.load("mnist5k")
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() == 1.0
    assert np.bincount(y_test).tolist() == [100] * 10
    (again, _), _ = data.load("mnist5k", seed=123)  # the split does not depend on the seed
    np.testing.assert_array_equal(again, x_train)
    # Digits are mostly background: a real image, not noise.
    assert 0.05 < (x_train > 0.5).mean() < 0.3


def test_padding_and_binarization():
    (x, _), (xt, _) = data.load("mnist5k", pad=True, binarize="dynamic")
    assert x.shape[1:] == (32, 32, 1)
    assert np.all(x[:, :2] == 0) and np.all(x[:, :, -2:] == 0)
    assert len(np.unique(x)) > 2  # training images stay grey for per-epoch draws
    assert set(np.unique(xt)) == {0.0, 1.0}  # the test split is binarized once
    (xs, _), _ = data.load("digits", binarize="static")
    assert set(np.unique(xs)) == {0.0, 1.0}


def test_dynamic_binarization_draws_anew_each_epoch():
    x = np.full((16, 4, 4, 1), 0.5, np.float32)
    ds = data.binarized_batches(x, 8, seed=1, shuffle=False)
    first, second = [b.numpy() for b in ds], [b.numpy() for b in ds]
    assert set(np.unique(first[0])) == {0.0, 1.0}
    assert not np.array_equal(first[0], second[0])


def test_binarized_batches_run_without_autotuning_and_keep_their_draws():
    # Autotuning is off (its wake-up delayed the end of every epoch); the batches are
    # those of the same pipeline with autotuning on, epoch after epoch.
    import tensorflow as tf

    x = np.random.default_rng(0).random((40, 3, 3, 1)).astype(np.float32)
    ds = data.binarized_batches(x, 8, seed=3)
    assert ds.options().autotune.enabled is False
    tuned = tf.data.Dataset.zip(
        tf.data.Dataset.from_tensor_slices(x).shuffle(40, seed=3).batch(8),
        tf.data.Dataset.random(seed=3, rerandomize_each_iteration=True),
    ).map(lambda b, s: tf.cast(tf.random.stateless_uniform(tf.shape(b), seed=[s, 3]) < b,
                               tf.float32),
          num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    for _ in range(2):
        ours, theirs = [b.numpy() for b in ds], [b.numpy() for b in tuned]
        assert len(ours) == 5
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_digits():
    (x, y), (xt, yt) = data.load("digits")
    assert x.shape[1:] == (8, 8, 1) and len(x) + len(xt) == 1797
    assert x.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_npz_and_npy_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(50, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "keras_layout.npz", x_train=imgs[:40], y_train=np.arange(40),
             x_test=imgs[40:], y_test=np.arange(10))
    (x, y), (xt, yt) = data.load(str(tmp_path / "keras_layout.npz"))
    assert x.shape == (40, 6, 6, 1) and xt.shape == (10, 6, 6, 1)
    np.testing.assert_allclose(x[0, ..., 0], imgs[0] / 255.0)
    np.save(tmp_path / "plain.npy", rng.random((30, 5)).astype(np.float32))
    (x, y), (xt, yt) = data.load(str(tmp_path / "plain.npy"), test_fraction=0.2)
    assert len(x) == 24 and len(xt) == 6 and np.all(y == -1)


def test_bad_files_name_the_problem(tmp_path):
    bad = np.ones((10, 4), np.float32)
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        data.load(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "range.npy", np.full((10, 4), -3.0, np.float32))
    with pytest.raises(ValueError, match=r"values in \[-3.0, -3.0\]; expected uint8 pixels or floats in \[0, 1\]"):
        data.load(str(tmp_path / "range.npy"))
    np.savez(tmp_path / "keys.npz", images=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"holds arrays \['images'\]; expected x_train and x_test"):
        data.load(str(tmp_path / "keys.npz"))
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'"):
        data.load("cifar")


def test_missing_keras_datasets_name_the_files_and_the_directory(tmp_path, monkeypatch):
    (tmp_path / "kh").mkdir()  # Keras creates its home directory when imported
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(data.DatasetNotAvailable, match=r"Put mnist.npz .* in .*kh/datasets"):
        data.load("mnist")
    with pytest.raises(data.DatasetNotAvailable, match=r"t10k-images-idx3-ubyte.gz .* in .*fashion-mnist"):
        data.load("fashion_mnist")


def test_keras_datasets_load_from_a_named_directory(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mnist.npz",
             x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), y_test=np.arange(5))
    (x, y), (xt, yt) = data.load("mnist", data_dir=str(tmp_path))
    assert x.shape == (20, 28, 28, 1) and yt.tolist() == [0, 1, 2, 3, 4]
    import gzip

    def idx(path, header, payload):
        with gzip.open(tmp_path / path, "wb") as f:
            f.write(bytes(header) + payload.tobytes())

    imgs = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    idx("train-labels-idx1-ubyte.gz", range(8), np.array([1, 2, 3], np.uint8))
    idx("train-images-idx3-ubyte.gz", range(16), imgs)
    idx("t10k-labels-idx1-ubyte.gz", range(8), np.array([4], np.uint8))
    idx("t10k-images-idx3-ubyte.gz", range(16), imgs[:1])
    (x, y), (xt, yt) = data.load("fashion_mnist", data_dir=str(tmp_path))
    np.testing.assert_allclose(x[..., 0], imgs / 255.0)
    assert y.tolist() == [1, 2, 3] and yt.tolist() == [4]
