"""Which samples the batch job writes where, and which requests compute them.

Pure functions of the job's flags: no I/O, no TensorFlow (numpy only to
put answers together, `assemble_shard`).

* Sample i comes from the seed row (seed, i), int32 [2]
  (`tfp_vae.row_sampling.seed_rows`, imported where the job runs: it loads TensorFlow).
* Output shard j holds samples [j * shard_size, (j + 1) * shard_size), cut at
  num_samples; with n workers, worker i takes the shards j with j % n == i
  (`plan_shards`).
* Requests lie on a fixed grid: request k asks for rows [k * B, (k + 1) * B)
  (B = batch size), cut at num_samples, whichever shard, worker or restart
  needs them, so a row is always computed in the same batch (`grid_requests`).
  A grid request that straddles two output shards is computed for each.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Shard:
    """Output shard `index` holds samples [start, stop) in the file `name`."""

    index: int
    start: int
    stop: int
    name: str

    @property
    def count(self) -> int:
        return self.stop - self.start


def shard_count(num_samples: int, shard_size: int) -> int:
    """Output shards of the whole job (all workers)."""
    return math.ceil(num_samples / shard_size)


def shard_file_name(index: int, total: int, fmt: str) -> str:
    """``samples-00003-of-00010.npz``; a png shard is a directory, without suffix."""
    width = max(5, len(str(total)))
    suffix = "" if fmt == "png" else f".{fmt}"
    return f"samples-{index:0{width}d}-of-{total:0{width}d}{suffix}"


def plan_shards(num_samples: int, shard_size: int, fmt: str,
                shard_index: int = 0, num_shards: int = 1) -> list:
    """This worker's output shards, in order."""
    total = shard_count(num_samples, shard_size)
    return [Shard(j, j * shard_size, min((j + 1) * shard_size, num_samples),
                  shard_file_name(j, total, fmt))
            for j in range(shard_index, total, num_shards)]


def grid_requests(shard: Shard, batch_size: int, num_samples: int) -> list:
    """The grid requests [start, stop) that cover `shard`.

    Request k is always rows [k * batch_size, (k + 1) * batch_size), cut at
    num_samples, so a row is computed in the same batch whoever asks for it.
    """
    first = shard.start - shard.start % batch_size
    return [(start, min(start + batch_size, num_samples))
            for start in range(first, shard.stop, batch_size)]


def assemble_shard(shard_start: int, shard_stop: int, answers) -> dict:
    """A shard's {output: array} from its grid requests' answers.

    ``answers``: (start, stop, {output: array of stop - start rows}) for each
    grid request covering [shard_start, shard_stop), checked by the caller;
    each is cut to the shard.
    """
    import numpy as np

    arrays = None
    for start, stop, outputs in answers:
        lo, hi = max(start, shard_start), min(stop, shard_stop)
        if arrays is None:
            arrays = {k: np.empty((shard_stop - shard_start, *np.shape(v)[1:]),
                                  np.asarray(v).dtype) for k, v in outputs.items()}
        for k in arrays:
            arrays[k][lo - shard_start:hi - shard_start] = outputs[k][lo - start:hi - start]
    return arrays
