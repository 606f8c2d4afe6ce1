r"""Deterministic autoencoders from the source material, trained with ``model.fit``.

An autoencoder is an encoder f and a decoder g trained to minimize L(x, g(f(x))).
One class covers every variant; the variants are arguments:

* plain: undercomplete (a bottleneck code of ``latent_dim`` units), with whatever
  encoder/decoder networks are passed (deep MLP or convolutional);
* sparse: ``sparsity="l1"`` adds lambda * sum_j |a_j| per example;
  ``sparsity="kl"`` adds beta * sum_j KL(rho || rho_hat_j), the KL between
  Bernoulli(rho) and Bernoulli(rho_hat_j), rho_hat_j the mean activation of code unit
  j over the batch (the code then uses a sigmoid so activations lie in (0, 1));
* denoising: ``noise="gaussian"`` adds N(0, level^2) noise, ``noise="mask"`` zeroes
  each input element with probability ``level``; the model reconstructs the clean x.
  Corruption happens only in training.

Reconstruction loss: ``"bce"`` (decoder outputs logits, mean = sigmoid) or ``"mse"``,
summed over data elements per example, averaged over the batch.
"""

from tfp_vae import names
from tfp_vae._backend import keras, tf, tfd
from tfp_vae._training import TermsModel, as_float, known_input_shape

LOSSES = names.AE_LOSSES
SPARSITY = names.SPARSITY
NOISE = names.NOISE


def kl_sparsity_penalty(codes, target):
    """sum_j KL(Bernoulli(target) || Bernoulli(mean_b codes[b, j])), a scalar."""
    rho_hat = tf.clip_by_value(tf.reduce_mean(codes, axis=0), 1e-6, 1.0 - 1e-6)
    return tf.reduce_sum(
        tfd.kl_divergence(tfd.Bernoulli(probs=tf.fill(tf.shape(rho_hat), target)),
                          tfd.Bernoulli(probs=rho_hat))
    )


@keras.saving.register_keras_serializable(package="tfp_vae")
class Autoencoder(TermsModel):
    """Plain, sparse or denoising autoencoder (see the module docstring).

    Args:
      encoder: Keras model x [B, *S] -> features [B, F]; a Dense code layer is added.
      decoder: Keras model code [B, latent_dim] -> [B, *S] (logits for "bce").
      latent_dim: size of the code.
      loss: "bce" or "mse".
      sparsity: None, "l1" or "kl"; ``sparsity_weight`` is lambda (l1) or beta (kl);
        ``sparsity_target`` is rho (kl).
      noise: None, "gaussian" or "mask"; ``noise_level`` is the std or the drop rate.
      code_activation: activation of the code layer; defaults to "sigmoid" for the KL
        sparsity penalty and "linear" otherwise.
      seed: seed of the training-time corruption.
    """

    TERMS = ("loss", "reconstruction", "penalty")

    def __init__(
        self,
        encoder,
        decoder,
        latent_dim,
        loss="bce",
        sparsity=None,
        sparsity_weight=1e-3,
        sparsity_target=0.05,
        noise=None,
        noise_level=0.3,
        code_activation=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}.")
        if sparsity not in SPARSITY:
            raise ValueError(f"sparsity must be one of {list(SPARSITY)}, got {sparsity!r}.")
        if noise not in NOISE:
            raise ValueError(f"noise must be one of {list(NOISE)}, got {noise!r}.")
        if not float(sparsity_weight) >= 0:
            raise ValueError(f"sparsity_weight must be >= 0, got {sparsity_weight!r}.")
        if not 0 < float(sparsity_target) < 1:
            raise ValueError(f"sparsity_target must be in (0, 1), got {sparsity_target!r}.")
        if noise == "mask" and not 0 <= float(noise_level) < 1:
            raise ValueError(f"noise_level for masking must be in [0, 1), got {noise_level!r}.")
        if noise == "gaussian" and not float(noise_level) >= 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level!r}.")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.loss_name = loss
        self.sparsity = sparsity
        self.sparsity_weight = float(sparsity_weight)
        self.sparsity_target = float(sparsity_target)
        self.noise = noise
        self.noise_level = float(noise_level)
        if code_activation is None:
            code_activation = "sigmoid" if sparsity == "kl" else "linear"
        self.code_activation = code_activation
        self.seed = seed
        self.code_layer = keras.layers.Dense(latent_dim, activation=code_activation, name="code")
        self._init_trackers(seed)
        input_shape = known_input_shape(encoder)
        if input_shape is not None:
            self.build(input_shape)

    def build(self, input_shape):
        if self.built:
            return
        self._build_networks(input_shape, self.code_layer)
        self.built = True

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "encoder": ser(self.encoder),
            "decoder": ser(self.decoder),
            "latent_dim": self.latent_dim,
            "loss": self.loss_name,
            "sparsity": self.sparsity,
            "sparsity_weight": self.sparsity_weight,
            "sparsity_target": self.sparsity_target,
            "noise": self.noise,
            "noise_level": self.noise_level,
            "code_activation": self.code_activation,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ model

    def encode(self, x, training=False):
        """The code f(x), [B, latent_dim]."""
        return self.code_layer(self.encoder(as_float(x), training=training))

    def decoder_outputs(self, codes, training=False):
        """The decoder's raw output g(code) (logits for "bce"), [B, *S]."""
        return self.decoder(as_float(codes), training=training)

    def decode_mean(self, codes):
        """g(code) as data: sigmoid of the logits for "bce", the raw output for "mse"."""
        out = self.decoder_outputs(codes)
        return tf.sigmoid(out) if self.loss_name == "bce" else out

    def reconstruct(self, x):
        return self.decode_mean(self.encode(x))

    def call(self, x, training=False):
        return self.reconstruct(x)

    def corrupt(self, x, seed):
        """The training-time corruption of x (identity when noise is None)."""
        x = as_float(x)
        if self.noise == "gaussian":
            return x + self.noise_level * tf.random.stateless_normal(tf.shape(x), seed)
        if self.noise == "mask":
            keep = tf.random.stateless_uniform(tf.shape(x), seed) >= self.noise_level
            return x * tf.cast(keep, x.dtype)
        return x

    def reconstruction_loss(self, x, outputs):
        """Per-example reconstruction loss summed over data elements, [B]."""
        x, outputs = as_float(x), as_float(outputs)
        axes = list(range(1, len(x.shape)))
        if self.loss_name == "bce":
            per_element = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=outputs)
        else:
            per_element = tf.square(x - outputs)
        return tf.reduce_sum(per_element, axis=axes)

    def penalty(self, codes):
        """The sparsity penalty of a batch of codes (0 when sparsity is None)."""
        codes = as_float(codes)
        if self.sparsity == "l1":
            return self.sparsity_weight * tf.reduce_mean(tf.reduce_sum(tf.abs(codes), axis=-1))
        if self.sparsity == "kl":
            return self.sparsity_weight * kl_sparsity_penalty(codes, self.sparsity_target)
        return tf.constant(0.0)

    def _terms(self, x, seed, training):
        inputs = self.corrupt(x, seed) if training else x
        codes = self.code_layer(self.encoder(inputs, training=training))
        # Per example, so the training step can average over a global batch split
        # unevenly across replicas; the penalty is a statistic of the (replica's) batch.
        recon = self.reconstruction_loss(x, self.decoder(codes, training=training))
        penalty = self.penalty(codes)
        return {"loss": recon + penalty, "reconstruction": recon, "penalty": penalty}
