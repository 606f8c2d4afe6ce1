r"""Per-row counter-based random numbers: Philox-4x32-10 written in TensorFlow ops.

Each row of a ``seeds`` tensor ([B, 2] int32) is a key; element e of that row's
stream is word e of the Philox-4x32-10 output for counter (e // 4, 0, stream, 0).
So a row's numbers depend on its own seed row and the element index only, never on
the batch it travels in, and the whole batch is computed at once: a fixed number of
element-wise ops whatever B is (no loop, no per-row op).

Philox-4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as
1, 2, 3", SC 2011), counter (c0, c1, c2, c3), key (k0, k1), ten rounds of

    (lo0, hi0) = M0 * c0,   (lo1, hi1) = M1 * c2          (32 x 32 -> 64-bit products)
    (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    (k0, k1) <- (k0 + W0, k1 + W1)  mod 2^32

with M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85. This is the
generator behind TensorFlow's own stateless ops (``alg=1``); the tests check it
against the published known-answer vectors and against TensorFlow's kernel.

Words are held in uint64 tensors with values below 2^32, so a 32 x 32-bit product is
exact and ``&``/``>>`` split it; every op used has CPU and GPU kernels for uint64.

Uniforms and normals are computed from the words with +, -, *, / and sqrt in float64
only. Those are correctly rounded by IEEE 754 on every CPU and in every position of a
vectorized loop, whereas TensorFlow's log, exp or ndtri kernels give results that
depend on an element's position in the tensor (vector body or scalar tail), hence on
the batch size. The transforms:

* uniform: u = (w + 1/2) / 2^32, strictly inside (0, 1);
* normal: x = Phi^-1(u) by Acklam's rational approximation (relative error below
  1.2e-9, far below float32's resolution); its tails need log(p), computed here as
  2^8 log(p^(1/2^8)): eight square roots bring p close to 1, where the series
  log y = 2 atanh((y - 1)/(y + 1)) converges in six terms.
"""

from tfp_vae._backend import tf

_MASK32 = 0xFFFFFFFF
_M = (0xD2511F53, 0xCD9E8D57)
_W = (0x9E3779B9, 0xBB67AE85)
ROUNDS = 10


def _u64(values):
    return tf.constant(values, tf.uint64)


def philox4x32(key, counter):
    """Philox-4x32-10 of ``counter`` under ``key``.

    Args:
      key: pair (k0, k1) of uint64 tensors of one shape, holding 32-bit values.
      counter: (c0, c1, c2, c3), the same; c0 and c2 of one shape, c1 and c3 of one
        shape, all shapes broadcastable with the key's.
    Returns:
      (x0, x1, x2, x3): uint64 tensors of 32-bit values, of the broadcast shape.
    """
    c0, c1, c2, c3 = counter
    # State as two pairs: a = (c0, c2), the words multiplied; b = (c3, c1), the words
    # xor-ed in, stored reversed so that one round needs a single reversal. (Only ops
    # with uint64 GPU kernels: no BroadcastTo, no Unpack.)
    a = tf.stack([c0, c2])
    b = tf.stack([c3, c1])
    k = tf.stack(list(key))
    extra = max(a.shape.rank, b.shape.rank, k.shape.rank) - 1
    m = tf.reshape(_u64(_M), [2] + [1] * extra)
    bumps = [[r * w for w in _W] for r in range(ROUNDS)]  # below 2^36: no overflow
    bumps = tf.reshape(_u64(bumps), [ROUNDS, 2] + [1] * extra)
    round_keys = (k[None] + bumps) & _MASK32
    for r in range(ROUNDS):
        product = a * m  # exact: both factors are below 2^32
        lo, hi = product & _MASK32, tf.bitwise.right_shift(product, _u64(32))
        # new a = (hi1 ^ c1 ^ k0, hi0 ^ c3 ^ k1);  new b = (lo0, lo1) = (c3', c1').
        a = (hi ^ b)[::-1] ^ round_keys[r]
        b = lo
    return a[0], b[1], a[1], b[0]


def row_keys(seeds):
    """Seed rows [B, 2] int32 -> Philox keys (k0, k1), uint64 [B, 1] (two's complement)."""
    seeds = tf.convert_to_tensor(seeds)
    if seeds.dtype not in (tf.int32, tf.int64):
        raise TypeError(f"seeds must be int32 or int64, got {seeds.dtype.name}.")
    if seeds.shape.rank is not None and (seeds.shape.rank != 2 or seeds.shape[-1] not in (None, 2)):
        raise ValueError(f"seeds must have shape [B, 2], got {seeds.shape}.")
    words = tf.cast(tf.cast(seeds, tf.int64) & _MASK32, tf.uint64)
    return words[:, :1], words[:, 1:]


def row_words(seeds, count, stream=0):
    """``count`` 32-bit words per seed row: uint64 [B, count], word e from block e // 4."""
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}.")
    if not isinstance(stream, int) or not 0 <= stream <= _MASK32:
        raise ValueError(f"stream must be an integer in [0, 2^32), got {stream!r}.")
    k0, k1 = row_keys(seeds)
    blocks = max(1, -(-count // 4))
    block = _u64([list(range(blocks))])  # [1, blocks]
    zero = _u64([[0] * blocks])
    x = philox4x32((k0, k1), (block, zero, _u64([[stream] * blocks]), zero))  # each [B, blocks]
    words = tf.reshape(tf.stack(x, axis=-1), [-1, 4 * blocks])
    return words[:, :count]


def uniform_from_words(words):
    """(w + 1/2) / 2^32 in float64: strictly inside (0, 1), exact."""
    return (tf.cast(words, tf.float64) + 0.5) * (1.0 / 2**32)


# Acklam's approximation of the standard normal quantile function.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01, 1.0)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
      3.754408661907416e00, 1.0)
_P_LOW = 0.02425
_LOG_SQRTS = 8


def _horner(coefficients, x):
    result = tf.constant(coefficients[0], x.dtype)
    for c in coefficients[1:]:
        result = result * x + c
    return result


def log_arithmetic(p):
    """log p for p in (0, 1], float64, from +, -, *, / and sqrt only (see module doc).

    Absolute error below 1e-12 for p >= 2^-40.
    """
    y = p
    for _ in range(_LOG_SQRTS):
        y = tf.sqrt(y)
    s = (y - 1.0) / (y + 1.0)
    s2 = s * s
    series = _horner((1 / 11, 1 / 9, 1 / 7, 1 / 5, 1 / 3, 1.0), s2) * s
    return series * (2.0 * 2**_LOG_SQRTS)


def normal_quantile(u):
    """Phi^-1(u) for u in (0, 1), float64, with +, -, *, / and sqrt only."""
    central = u - 0.5
    r = central * central
    x_central = _horner(_A, r) * central / _horner(_B, r)
    tail_p = tf.minimum(u, 1.0 - u)
    q = tf.sqrt(-2.0 * log_arithmetic(tail_p))
    x_low = _horner(_C, q) / _horner(_D, q)  # the lower tail's quantile (negative)
    x_tail = tf.where(u < 0.5, x_low, -x_low)
    return tf.where(tail_p < _P_LOW, x_tail, x_central)


def row_uniform(seeds, shape, stream=0, dtype=tf.float32):
    """Uniforms in (0, 1), [B, *shape]; row b from seed row b only."""
    shape = [int(s) for s in shape]
    count = _size(shape)
    u = uniform_from_words(row_words(seeds, count, stream))
    return tf.cast(tf.reshape(u, [-1, *shape]), dtype)


def row_normal(seeds, shape, stream=0, dtype=tf.float32):
    """Standard normals, [B, *shape]; row b from seed row b only."""
    shape = [int(s) for s in shape]
    count = _size(shape)
    x = normal_quantile(uniform_from_words(row_words(seeds, count, stream)))
    return tf.cast(tf.reshape(x, [-1, *shape]), dtype)


def _size(shape):
    size = 1
    for s in shape:
        if s < 0:
            raise ValueError(f"shape must be non-negative, got {shape}.")
        size *= s
    return size
