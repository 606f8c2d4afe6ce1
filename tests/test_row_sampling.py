"""Per-row Philox sampling: known answers, exactness, statistics, and the graphs it makes."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from tfp_vae import philox, row_sampling
from tfp_vae._backend import tf, tfd

U64 = tf.uint64


def _philox(counter, key):
    out = philox.philox4x32(
        tuple(tf.constant([k], U64) for k in key), tuple(tf.constant([c], U64) for c in counter)
    )
    return [int(o.numpy()[0]) for o in out]


# Known-answer vectors of Philox-4x32-10 published with the Random123 library
# (kat_vectors: counter, key -> output).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert _philox(counter, key) == list(expected)


@pytest.mark.parametrize("key64,c0,c1", [(0, 0, 0), (0xDEADBEEF12345678, 7, 1 << 40), (2**64 - 1, 2**64 - 2, 3)])
def test_philox_matches_tensorflows_own_kernel(key64, c0, c1):
    # TensorFlow's stateless ops with alg=1 run Philox-4x32-10 on key (lo, hi) and
    # counter (lo(c0), hi(c0), lo(c1), hi(c1)), emitting 4 words per counter value.
    got = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=[8], key=tf.constant([key64], U64), counter=tf.constant([c0, c1], U64),
        alg=1, dtype=tf.uint32,
    ).numpy().astype(np.int64)
    lo, hi = key64 & 0xFFFFFFFF, key64 >> 32
    for block in range(2):
        c = c0 + block
        counter = (c & 0xFFFFFFFF, (c >> 32) & 0xFFFFFFFF, c1 & 0xFFFFFFFF, c1 >> 32)
        assert _philox(counter, (lo, hi)) == got[4 * block : 4 * block + 4].tolist()


def test_row_words_follow_the_counter_layout():
    seeds = np.array([[3, -1]], np.int32)  # -1 is the key word 0xFFFFFFFF
    words = philox.row_words(seeds, 10, stream=5).numpy()[0]
    for block in range(3):
        expected = _philox((block, 0, 5, 0), (3, 0xFFFFFFFF))
        assert words[4 * block : 4 * block + 4].tolist() == expected[: len(words[4 * block : 4 * block + 4])]


def test_normal_quantile_and_log_against_scipy():
    u = np.concatenate([
        np.linspace(1e-9, 1 - 1e-9, 100_001),
        (np.arange(0, 2**32, 2**20) + 0.5) / 2**32,
        [0.5 / 2**32, 1 - 0.5 / 2**32, 0.02425, 1 - 0.02425, 0.5],
    ])
    got = philox.normal_quantile(tf.constant(u)).numpy()
    want = scipy.special.ndtri(u)
    # Acklam's approximation: relative error below 1.2e-9.
    assert np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))) < 2e-9
    p = np.logspace(-12, 0, 500)
    assert np.max(np.abs(philox.log_arithmetic(tf.constant(p)).numpy() - np.log(p))) < 1e-12


def _bits(a):
    a = np.asarray(a)
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


def _rows(seed, n, start=0):
    return np.stack([np.full(n, seed), np.arange(start, start + n)], 1).astype(np.int32)


def _mog(tril=False):
    k, d = 3, 2
    loc = tf.constant([[-4.0, 0.0], [0.0, 3.0], [5.0, -1.0]])
    if tril:
        scale = tf.constant([[[1.0, 0.0], [0.5, 0.3]], [[0.4, 0.0], [-0.2, 0.8]], [[0.7, 0.0], [0.0, 0.2]]])
        components = tfd.MultivariateNormalTriL(loc, scale)
    else:
        components = tfd.MultivariateNormalDiag(loc, tf.constant([[1.0, 0.5], [0.3, 0.8], [0.6, 0.6]]))
    assert components.batch_shape == [k] and components.event_shape == [d]
    return tfd.MixtureSameFamily(tfd.Categorical(logits=tf.math.log([0.2, 0.5, 0.3])), components)


DISTRIBUTIONS = {
    "normal": lambda: tfd.MultivariateNormalDiag(tf.zeros([4]), tf.ones([4])),
    "tril": lambda: tfd.MultivariateNormalTriL(
        tf.constant([1.0, -2.0, 0.5]),
        tf.constant([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]]),
    ),
    "mog": _mog,
    "mog_tril": lambda: _mog(tril=True),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_a_rows_draw_is_bit_identical_alone_or_in_a_batch_of_1000(name):
    dist = DISTRIBUTIONS[name]()
    seeds = _rows(9, 1000)
    batch = row_sampling.sample_rows(dist, seeds).numpy()
    compiled = tf.function(lambda s: row_sampling.sample_rows(dist, s))
    np.testing.assert_array_equal(_bits(compiled(seeds).numpy()), _bits(batch))
    for r in (0, 1, 7, 500, 999):
        alone = row_sampling.sample_rows(dist, seeds[r : r + 1]).numpy()
        np.testing.assert_array_equal(_bits(alone[0]), _bits(batch[r]))
    for start, size in ((3, 17), (100, 255)):
        part = compiled(seeds[start : start + size]).numpy()
        np.testing.assert_array_equal(_bits(part), _bits(batch[start : start + size]))


def test_posterior_rows_use_their_own_parameters_and_seed():
    loc = tf.constant(np.arange(12, dtype=np.float32).reshape(4, 3))
    scale = tf.constant(np.linspace(0.1, 2.0, 12, dtype=np.float32).reshape(4, 3))
    q = tfd.MultivariateNormalDiag(loc, scale)  # batch [4]: row b is its own posterior
    seeds = _rows(2, 4)
    z = row_sampling.sample_rows(q, seeds, sample_shape=(5,), stream=row_sampling.POSTERIOR)
    assert z.shape == (4, 5, 3)
    eps = philox.row_normal(seeds, [5, 3], row_sampling.POSTERIOR).numpy()
    np.testing.assert_allclose(z.numpy(), loc.numpy()[:, None] + scale.numpy()[:, None] * eps, rtol=1e-6)
    alone = row_sampling.sample_rows(q[2:3], seeds[2:3], (5,), row_sampling.POSTERIOR).numpy()
    np.testing.assert_array_equal(_bits(alone[0]), _bits(z.numpy()[2]))


N = 20_000


def test_standard_normal_statistics():
    d = 4
    z = row_sampling.sample_rows(DISTRIBUTIONS["normal"](), _rows(123, N)).numpy().astype(np.float64)
    se = 1 / np.sqrt(N)
    np.testing.assert_array_less(np.abs(z.mean(0)), 4.5 * se)
    np.testing.assert_array_less(np.abs(z.var(0) - 1), 4.5 * np.sqrt(2 / N))
    np.testing.assert_array_less(np.abs(np.corrcoef(z.T) - np.eye(d)), 4.5 * se)
    for j in range(d):
        assert scipy.stats.kstest(z[:, j], "norm").pvalue > 1e-3, j
    # Neighbouring rows (seed rows (s, i) and (s, i + 1)) are uncorrelated.
    for j in range(d):
        r = np.corrcoef(z[:-1, j], z[1:, j])[0, 1]
        assert abs(r) < 4.5 * se, (j, r)
    # Rows with the same index under neighbouring job seeds too.
    other = row_sampling.sample_rows(DISTRIBUTIONS["normal"](), _rows(124, N)).numpy()
    assert abs(np.corrcoef(z[:, 0], other[:, 0])[0, 1]) < 4.5 * se


def test_uniform_statistics_and_range():
    u = philox.row_uniform(_rows(5, N), [3], dtype=tf.float64).numpy()
    assert u.min() > 0 and u.max() < 1
    for j in range(3):
        assert scipy.stats.kstest(u[:, j], "uniform").pvalue > 1e-3


def test_full_covariance_statistics():
    dist = DISTRIBUTIONS["tril"]()
    z = row_sampling.sample_rows(dist, _rows(8, N)).numpy().astype(np.float64)
    cov = dist.covariance().numpy()
    np.testing.assert_array_less(np.abs(z.mean(0) - dist.mean().numpy()), 4.5 * np.sqrt(np.diag(cov) / N))
    np.testing.assert_allclose(np.cov(z.T), cov, atol=0.04)


@pytest.mark.parametrize("tril", [False, True])
def test_mixture_component_frequencies_and_moments(tril):
    dist = _mog(tril)
    z = row_sampling.sample_rows(dist, _rows(31, N)).numpy().astype(np.float64)
    u = philox.row_uniform(_rows(31, N), [], row_sampling.COMPONENT, tf.float64).numpy()
    weights = np.array([0.2, 0.5, 0.3])
    component = np.searchsorted(np.cumsum(weights)[:-1], u, side="right")
    counts = np.bincount(component, minlength=3)
    assert scipy.stats.chisquare(counts, weights * N).pvalue > 1e-3
    # Each draw sits with the component it picked: the mixture's components are far apart.
    locs = dist.components_distribution.mean().numpy()
    nearest = np.argmin(((z[:, None, :] - locs[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == component) > 0.99
    np.testing.assert_allclose(z.mean(0), dist.mean().numpy(), atol=0.1)
    np.testing.assert_allclose(np.cov(z.T), dist.covariance().numpy(), rtol=0.05, atol=0.1)
    for j in range(2):
        marginal = lambda x, j=j: sum(  # noqa: E731
            w * scipy.stats.norm.cdf(x, locs[k, j], np.sqrt(dist.components_distribution.covariance().numpy()[k, j, j]))
            for k, w in enumerate(weights)
        )
        assert scipy.stats.kstest(z[:, j], marginal).pvalue > 1e-3


def test_transformed_distribution_pushes_the_base_draw_through_the_bijector():
    from tfp_vae._backend import tfb

    base = tfd.MultivariateNormalDiag(tf.zeros([2]), tf.ones([2]))
    dist = tfd.TransformedDistribution(base, tfb.Exp())
    seeds = _rows(1, 6)
    np.testing.assert_allclose(
        row_sampling.sample_rows(dist, seeds).numpy(),
        np.exp(row_sampling.sample_rows(base, seeds).numpy()),
        rtol=1e-6,
    )


def test_unsupported_distribution_is_named():
    with pytest.raises(NotImplementedError, match="Dirichlet"):
        row_sampling.sample_rows(tfd.Dirichlet([1.0, 1.0]), _rows(0, 2))


@pytest.mark.parametrize("bad,match", [
    (np.zeros([3, 3], np.int32), r"shape \[B, 2\]"),
    (np.zeros([3, 2], np.float32), "int32 or int64"),
])
def test_bad_seeds_are_refused(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        philox.row_normal(bad, [2])


def _op_types(fn, *specs):
    graph = tf.function(fn).get_concrete_function(*specs).graph
    return [op.type for op in graph.get_operations()]


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_graph_has_no_loop_and_the_same_ops_for_every_batch_size(name):
    dist = DISTRIBUTIONS[name]()
    ops = {
        b: _op_types(lambda s: row_sampling.sample_rows(dist, s), tf.TensorSpec([b, 2], tf.int32))
        for b in (1, 256, 1000, None)
    }
    assert ops[1] == ops[256] == ops[1000]
    for b, types in ops.items():
        assert not {"While", "StatelessWhile", "For", "MapDefun"} & set(types), b


_CHILD = """
import sys, numpy as np
from tfp_vae import row_sampling
from tfp_vae._backend import tf, tfd
seeds = np.stack([np.full(300, 4), np.arange(300)], 1).astype(np.int32)
prior = tfd.MixtureSameFamily(
    tfd.Categorical(logits=[0.1, -0.3, 0.5]),
    tfd.MultivariateNormalDiag([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]], [[1.0, 0.5], [0.3, 2.0], [0.7, 0.7]]))
z = np.concatenate([
    row_sampling.sample_rows(prior, seeds[:37]).numpy(),
    row_sampling.sample_rows(prior, seeds[37:]).numpy()])
sys.stdout.buffer.write(z.tobytes())
"""


def test_draws_are_the_same_bits_under_other_cpu_settings():
    # Another process with oneDNN off and its vector ISA capped (the sampler uses no
    # oneDNN kernel; this guards against that changing), batching the rows differently.
    import os
    import subprocess
    import sys

    child_env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=child_env, capture_output=True,
                         check=True, timeout=120).stdout
    seeds = _rows(4, 300)
    prior = tfd.MixtureSameFamily(
        tfd.Categorical(logits=[0.1, -0.3, 0.5]),
        tfd.MultivariateNormalDiag([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]], [[1.0, 0.5], [0.3, 2.0], [0.7, 0.7]]))
    here = row_sampling.sample_rows(prior, seeds).numpy()
    assert out == here.tobytes()
