r"""One draw per seed row, for a whole batch at once.

``sample_rows(distribution, seeds)`` returns, for each row b of ``seeds`` ([B, 2]
int32), a draw that depends only on that row: the noise comes from
``philox.row_normal``/``row_uniform`` keyed by the row, and is turned into a sample by
element-wise arithmetic. No loop over rows: the graph has the same ops for every B.

Bits. Every op between a row's seed and its draw is exact or correctly rounded
element by element (integer ops, +, -, *, /, sqrt, comparisons, gathers), so a
row's draw is bit-identical whatever batch it is in and on any IEEE-754 machine --
with one qualification: a full-covariance scale multiplies by a sum over the latent
dimension, whose order TensorFlow fixes per row and independently of B (tests check
this). Quantities that pass through matrix kernels with the batch (a decoder, an
encoder) are only equal within a tolerance across batch sizes.

Streams keep independent uses of the same seed row apart (the Philox counter's third
word): prior draws use ``PRIOR``, a mixture's choice of component ``COMPONENT``,
posterior draws (importance sampling in ``log_likelihood``) ``POSTERIOR``.

Supported distributions, by class (a registry: add an entry for a new family):

* ``tfd.MultivariateNormalLinearOperator`` (Diag, TriL): loc + scale @ eps, with
  batch shape [] (one distribution for every row) or [B] (row b's own);
* ``tfd.MixtureSameFamily`` of those with batch [K] and a ``tfd.Categorical``:
  component k is the first whose cumulative weight exceeds the row's uniform;
* ``tfd.TransformedDistribution``: the base's row draw pushed through the bijector.
"""

import numpy as np

from tfp_vae import philox
from tfp_vae._backend import tf, tfd

PRIOR, COMPONENT, POSTERIOR = 0, 1, 2


def sample_rows(distribution, seeds, sample_shape=(), stream=PRIOR):
    """Draws [B, *sample_shape, *event]; row b uses seed row b only.

    Args:
      distribution: batch shape [] or [B], event [D]; see the module docstring.
      seeds: int32 [B, 2].
      sample_shape: draws per row (e.g. (k,) for k importance samples).
      stream: which of the seed row's independent streams to use.
    """
    seeds = tf.convert_to_tensor(seeds, tf.int32)
    sample_shape = tuple(int(s) for s in sample_shape)
    for cls in type(distribution).__mro__:
        if cls in _SAMPLERS:
            return _SAMPLERS[cls](distribution, seeds, sample_shape, stream)
    raise NotImplementedError(
        f"sample_rows does not know how to draw from a {type(distribution).__name__}; "
        f"supported: {sorted(c.__name__ for c in _SAMPLERS)}."
    )


def _per_row(t, batch_rank, sample_shape):
    """Inserts the sample dimensions after a per-row batch dimension ([B, ...] -> [B, 1.., ...])."""
    if batch_rank == 0:
        return t
    if batch_rank != 1:
        raise ValueError(f"sample_rows needs batch shape [] or [B], got rank {batch_rank}.")
    return tf.reshape(t, tf.concat([tf.shape(t)[:1], [1] * len(sample_shape), tf.shape(t)[1:]], 0))


def affine(loc, scale, eps):
    """loc + scale @ eps for a diagonal scale [..., D] or a lower-triangular one [..., D, D]."""
    if scale.shape.rank == loc.shape.rank:
        return loc + scale * eps
    return loc + tf.reduce_sum(scale * eps[..., None, :], axis=-1)


def _scale_tensor(operator):
    if isinstance(operator, tf.linalg.LinearOperatorDiag):
        return operator.diag_part()
    return operator.to_dense()


def _sample_mvn(distribution, seeds, sample_shape, stream):
    dim = int(distribution.event_shape[-1])
    batch_rank = distribution.batch_shape.rank
    eps = philox.row_normal(seeds, [*sample_shape, dim], stream, distribution.dtype)
    loc = _per_row(distribution.loc, batch_rank, sample_shape)
    scale = _per_row(_scale_tensor(distribution.scale), batch_rank, sample_shape)
    return affine(loc, scale, eps)


def _sample_mixture(distribution, seeds, sample_shape, stream):
    mixture = distribution.mixture_distribution
    components = distribution.components_distribution
    if not isinstance(mixture, tfd.Categorical) or not isinstance(
        components, tfd.MultivariateNormalLinearOperator
    ):
        raise NotImplementedError(
            "sample_rows draws from mixtures of a Categorical over multivariate normals, got "
            f"{type(mixture).__name__} over {type(components).__name__}."
        )
    if distribution.batch_shape.rank != 0 or components.batch_shape.rank != 1:
        raise ValueError(
            "sample_rows needs a mixture with batch shape [] over components of batch [K], "
            f"got {distribution.batch_shape} over {components.batch_shape}."
        )
    probs = tf.cast(mixture.probs_parameter(), tf.float64)  # [K], computed once per call
    boundaries = tf.cumsum(probs)[:-1]
    u = philox.row_uniform(seeds, sample_shape, stream + COMPONENT, tf.float64)
    index = tf.reduce_sum(tf.cast(u[..., None] >= boundaries, tf.int32), axis=-1)
    dim = int(components.event_shape[-1])
    eps = philox.row_normal(seeds, [*sample_shape, dim], stream, components.dtype)
    num = tf.shape(probs)[0]
    loc = tf.broadcast_to(components.loc, [num, dim])
    scale = _scale_tensor(components.scale)
    scale = tf.broadcast_to(scale, tf.concat([[num], tf.shape(scale)[1:]], 0))
    return affine(tf.gather(loc, index), tf.gather(scale, index), eps)


def _sample_transformed(distribution, seeds, sample_shape, stream):
    base = sample_rows(distribution.distribution, seeds, sample_shape, stream)
    return distribution.bijector.forward(base)


_SAMPLERS = {
    tfd.MultivariateNormalLinearOperator: _sample_mvn,
    tfd.MixtureSameFamily: _sample_mixture,
    tfd.TransformedDistribution: _sample_transformed,
}


def seed_rows(seed, start, stop):
    """Seed rows (seed, start), (seed, start + 1), ..., (seed, stop - 1): int32 [stop - start, 2].

    The convention that ties sample i of a job with seed S to seed row (S, i);
    numpy, so it serves tensors and requests alike.
    """
    for name, value, high in (("seed", seed, 2**31), ("start", start, 2**31), ("stop", stop, 2**31 + 1)):
        if not isinstance(value, (int, np.integer)) or not -(2**31) <= value < high:
            raise ValueError(f"{name} must be an integer that fits int32 row indices, got {value!r}.")
    if stop < start:
        raise ValueError(f"stop must be >= start, got start={start}, stop={stop}.")
    rows = np.empty((stop - start, 2), dtype=np.int32)
    rows[:, 0] = seed
    rows[:, 1] = np.arange(start, stop, dtype=np.int64)
    return rows
