"""Checks of one training step on two CPU replicas; run as a script by test_distribute.py.

Splitting the CPU into logical devices must happen before TensorFlow initializes its
devices, so this runs in a fresh process. It prints one JSON object of measurements;
the test makes the assertions.
"""

import json
import sys

from tfp_vae import distribute

strategy = distribute.make_strategy("mirrored", cpu_replicas=2)

import numpy as np  # noqa: E402

from tfp_vae import train  # noqa: E402
from tfp_vae._backend import keras, tf  # noqa: E402
from tfp_vae.config import TrainConfig  # noqa: E402

LEARNING_RATE = 0.5


def build(config, x, scope):
    with scope:
        model = train.build_model(config, x.shape[1:])
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    return model


def fit_epoch(model, x, batch_size):
    """Weights after fit() takes one epoch of global batches of x, in order."""
    model.fit(x, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return [w.numpy() for w in model.trainable_weights]


def sgd_reference(model, steps, rule):
    """Weights after SGD steps, each on the loss ``rule`` combines from (shard, seed) pairs."""
    weights = [w.numpy() for w in model.trainable_weights]
    for pairs in steps:
        with tf.GradientTape() as tape:
            losses = [model._terms(tf.constant(s), seed, training=True)["loss"] for s, seed in pairs]
            loss = rule(losses)
        grads = tape.gradient(loss, model.trainable_weights)
        for w, g in zip(model.trainable_weights, grads):
            w.assign(w - LEARNING_RATE * g)
    result = [w.numpy() for w in model.trainable_weights]
    for w, value in zip(model.trainable_weights, weights):
        w.assign(value)
    return result


def max_diff(a, b):
    return float(max(np.max(np.abs(u - v)) for u, v in zip(a, b)))


def global_mean(losses):
    """The global-batch mean: every example weighs the same."""
    return tf.add_n([tf.reduce_sum(l) for l in losses]) / sum(int(tf.size(l)) for l in losses) \
        if losses[0].shape.rank else tf.add_n(losses) / len(losses)


def mean_of_means(losses):
    """The rule that weighs each replica's mean the same (wrong when shards differ in size)."""
    return tf.add_n([tf.reduce_mean(l) for l in losses]) / len(losses)


def step_check(config, x, batch_size, splits):
    """fit()'s epoch on two replicas against SGD on global-batch means, computed here.

    ``splits``: for each global batch, where tf.distribute cuts it between the replicas.
    """
    plain = build(config, x, tf.distribute.get_strategy().scope())
    mirrored = build(config, x, strategy.scope())
    mirrored.set_weights(plain.get_weights())
    start = [w.numpy() for w in plain.trainable_weights]
    after = fit_epoch(mirrored, x, batch_size)

    def steps(fold):
        out = []
        for k, split in enumerate(splits):
            batch = x[k * batch_size:(k + 1) * batch_size]
            seed = tf.constant([config.seed, k], tf.int32)  # the seed generator's k-th draw
            seeds = [tf.random.experimental.stateless_fold_in(seed, r) if fold else seed for r in range(2)]
            out.append(list(zip([batch[:split], batch[split:]], seeds)))
        return out

    reference = sgd_reference(plain, steps(True), global_mean)
    other = sgd_reference(plain, steps(True), mean_of_means)
    same_noise = sgd_reference(plain, steps(False), global_mean)
    return {
        "update": max_diff(reference, start),
        "vs_reference": max_diff(after, reference),
        "vs_mean_of_means": max_diff(after, other),
        "vs_same_noise": max_diff(after, same_noise),
    }


def replica_noise(config, x):
    """Each replica's seed and noise for one training step on two copies of one example."""
    model = build(config, x, strategy.scope())
    batch = np.repeat(x[:1], 2, axis=0)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))

    def step(xb):
        seed = model._next_seed()
        eps = tf.random.stateless_normal([4], seed)
        return seed, eps, model._terms(xb, seed, training=True)["loss"]

    seeds, eps, losses = strategy.run(step, args=(next(iter(dataset)),))
    local = strategy.experimental_local_results
    return {
        "seeds": [s.numpy().tolist() for s in local(seeds)],
        "eps": [e.numpy().tolist() for e in local(eps)],
        "losses": [float(l.numpy()[0]) for l in local(losses)],
    }


def main():
    vae = TrainConfig(dataset="digits", hidden=(16,), latent_dim=2, seed=3)
    ae = TrainConfig(dataset="digits", hidden=(16,), latent_dim=2, seed=3, model="ae")
    (x, _), _, _ = train.load_splits(vae)
    out = {
        "replicas": strategy.num_replicas_in_sync,
        # 11 examples in global batches of 8: the last batch of 3 splits 2 and 1, where
        # the global mean and the mean of the replicas' means differ.
        "vae_step": step_check(vae, x[:11], 8, splits=[4, 2]),
        "ae_step": step_check(ae, x[:11], 8, splits=[4, 2]),
        "noise": replica_noise(vae, x),
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
