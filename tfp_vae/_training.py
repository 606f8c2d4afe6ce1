"""The training loop shared by the models: a loss made of named terms, each a metric."""

from tfp_vae._backend import keras, tf


class TermsModel(keras.Model):
    """A Keras model whose ``_terms(x, seed, training)`` returns named loss terms.

    ``_terms`` returns a dict holding at least "loss"; each entry is a scalar or a
    per-example vector. Training minimizes the mean of "loss" (plus any layer losses);
    every name in ``TERMS`` is tracked as a metric, so ``fit``/``evaluate`` report them.
    Training randomness comes from ``self.seed_generator`` as a TFP stateless seed.

    Under a ``tf.distribute`` strategy each replica runs the step on its part of the
    global batch: its loss is its share of the global mean (``global_batch_mean``) and
    its seed has the replica id folded in (``replica_seed``). The metrics are Keras
    metrics, whose totals and counts are summed over replicas when read.
    """

    TERMS = ("loss",)
    NESTED = ("encoder", "decoder")  # config entries holding serialized Keras objects

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.NESTED:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def _init_trackers(self, seed):
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.TERMS}

    def _terms(self, x, seed, training):
        raise NotImplementedError

    @property
    def data_shape(self):
        """The shape S of one example, known once the model is built."""
        return self._data_shape

    def get_build_config(self):
        return {"input_shape": (None, *self._data_shape)} if self.built else {}

    def _build_networks(self, input_shape, head):
        """Builds encoder -> ``head`` and the decoder for data of ``input_shape``.

        Checks that the encoder emits flat features and that the decoder maps a
        latent_dim vector back to the data shape. Returns the input shape with an
        unknown batch dimension.
        """
        input_shape = (None, *tuple(input_shape)[1:])
        self._data_shape = tuple(int(s) for s in input_shape[1:])
        self.encoder.build(input_shape)
        features = self.encoder.compute_output_shape(input_shape)
        if len(features) != 2:
            raise ValueError(
                f"The encoder must output features of shape [batch, F]; it gives {features}."
            )
        head.build(features)
        self.decoder.build((None, self.latent_dim))
        out = tuple(self.decoder.compute_output_shape((None, self.latent_dim)))[1:]
        if out != self._data_shape:
            raise ValueError(
                f"The decoder maps z to shape {out}, but the data has shape {self._data_shape}."
            )
        return input_shape

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _record(self, terms):
        for name, tracker in self._trackers.items():
            tracker.update_state(terms[name])
        results = {name: tracker.result() for name, tracker in self._trackers.items()}
        if _across_workers():
            # Keras reduces a step's outputs across workers with
            # strategy.reduce("MEAN", v, axis=0), which fails on scalars; [1] reduces
            # to the scalar. (Epoch logs are read from the metrics themselves.)
            results = {name: tf.reshape(v, [1]) for name, v in results.items()}
        return results

    def _next_seed(self):
        return replica_seed(tf.cast(self.seed_generator.next(), tf.int32))

    def train_step(self, data):
        x = features(data)
        seed = self._next_seed()
        with tf.GradientTape() as tape:
            terms = self._terms(x, seed, training=True)
            loss = global_batch_mean(terms["loss"])
            if self.losses:
                loss += tf.add_n(self.losses) / _replicas()
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._record(terms)

    def test_step(self, data):
        return self._record(self._terms(features(data), self._next_seed(), training=False))


def _replicas():
    """Replicas that train in sync (1 outside a tf.distribute strategy)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def _across_workers():
    """Whether training runs on a MultiWorkerMirroredStrategy with more than one worker."""
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) > 1


def replica_seed(seed):
    """``seed`` ([2] int32) for this replica: unchanged with one replica, else with the
    replica id folded in, so replicas draw different noise from one shared seed.

    The seed generator's state is mirrored: every replica holds the same state and
    advances it the same way, so without this each replica would draw the noise of
    the others (example i of every replica's part of the batch, the same eps).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)


def global_batch_mean(values):
    """This replica's share of the mean of ``values`` over the global batch.

    ``values`` is a per-example vector [b] (this replica's b examples) or a scalar that
    is already a mean over them. Optimizers sum gradients over replicas, so a replica
    contributes sum(values) / N with N the global batch size, gathered from all replicas
    (the last batch of an epoch may split unevenly); a scalar counts 1 / replicas.
    With one replica this is ``tf.reduce_mean(values)``.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.reduce_mean(values)
    if values.shape.rank == 0:
        return values / context.num_replicas_in_sync
    count = tf.cast(tf.shape(values)[0], values.dtype)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.reduce_sum(values) / total


def features(data):
    """x from what fit() passes: x, (x,), (x, y) or (x, y, sample_weight)."""
    x = data[0] if isinstance(data, (tuple, list)) else data
    return as_float(x)


def as_float(x):
    """A float32 tensor from a NumPy array, a list or a tensor of any float dtype.

    Every public method takes what Keras takes; the models' mathematics needs float32
    tensors with a static rank.
    """
    if isinstance(x, (tf.Tensor, tf.Variable)) and x.dtype == tf.float32:
        return x
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def known_input_shape(encoder):
    """The encoder's input shape when fully known (so a model can build at once), else None."""
    try:
        shape = encoder.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list) or shape is None or any(s is None for s in shape[1:]):
        return None
    return tuple(shape)
