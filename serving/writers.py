"""The batch job's output formats: one complete shard in, one file (or directory) out.

* ``npz``: the outputs and ``index`` (int64 sample numbers), fixed zip
  timestamps, so the same arrays give the same bytes;
* ``png``: a directory of ``<index>.png`` images, pixel = round(255 * clip(x, 0, 1));
* ``tfrecord``: one ``tf.Example`` per sample: ``index``, each output flattened
  and its ``<name>/shape``.

`ShardWriter.write` puts a shard in place whole or not at all (`tfp_vae.files`)
and returns the sha256 the manifest records (`serving.manifest.digest_of` of
what it wrote).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
import zlib
from typing import Optional

import numpy as np

from serving.manifest import directory_digest, sha256

FORMATS = ("npz", "png", "tfrecord")


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def npz_bytes(arrays: dict) -> bytes:
    """An .npz (np.load reads it) with fixed timestamps: same data, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            zf.writestr(_zip_entry(f"{name}.npy"), data.getvalue())
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of a uint8 [H, W] or [H, W, C] (C in 1, 3, 4) image."""
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 9))
            + _png_chunk(b"IEND", b""))


def png_image_check(shape) -> Optional[str]:
    """None if samples of `shape` (without batch) can be PNGs, else why not."""
    if shape is None:
        return "its rank is unknown"
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        return None
    return (f"samples have shape {list(shape)}; expected (H, W) or (H, W, C) "
            f"with C in 1, 3, 4")


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def tfrecord_bytes(arrays: dict, index: np.ndarray) -> bytes:
    """A TFRecord file of one tf.Example per sample (module docstring)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "shard.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for row, i in enumerate(index):
                feature = {"index": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(i)]))}
                for name in sorted(arrays):
                    value = np.asarray(arrays[name][row])
                    if value.dtype.kind == "f":
                        f = tf.train.Feature(float_list=tf.train.FloatList(
                            value=value.reshape(-1).astype(np.float32)))
                    else:
                        f = tf.train.Feature(int64_list=tf.train.Int64List(
                            value=value.reshape(-1).astype(np.int64)))
                    feature[name] = f
                    feature[f"{name}/shape"] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=list(value.shape)))
                example = tf.train.Example(
                    features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString(deterministic=True))
        with open(path, "rb") as f:
            return f.read()


class ShardWriter:
    """Writes complete shards of one job's format into ``out_dir``."""

    def __init__(self, out_dir: str, fmt: str, num_samples: int):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
        self.out_dir = out_dir
        self.fmt = fmt
        self.width = max(6, len(str(num_samples - 1)))   # png file names

    def write(self, shard, arrays: dict) -> str:
        """Puts ``shard`` (its outputs ``arrays``) in place; returns its sha256."""
        from tfp_vae import files  # loads TensorFlow: only when writing

        final = os.path.join(self.out_dir, shard.name)
        index = np.arange(shard.start, shard.stop, dtype=np.int64)
        if self.fmt == "png":
            return self._write_pngs(final, arrays["x"], index)
        if self.fmt == "npz":
            data = npz_bytes({**arrays, "index": index})
        else:
            data = tfrecord_bytes(arrays, index)
        files.write_atomically(final, data)
        return sha256(data)

    def _write_pngs(self, final: str, x: np.ndarray, index: np.ndarray) -> str:
        from tfp_vae import files

        lines = []
        with files.atomic_directory(final, replace=True) as temp:
            for i, image in zip(index, to_uint8(x)):
                name = f"{int(i):0{self.width}d}.png"
                data = png_bytes(image)
                files.write_atomically(os.path.join(temp, name), data)
                lines.append(f"{name} {sha256(data)}\n")
        return directory_digest(lines)
