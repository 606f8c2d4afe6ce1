"""The training configuration: a small dataclass saved next to the weights.

``tfp-vae train`` fills it from flags or from a JSON file (``--config``), validates it
before anything is trained or written, and saves it as ``config.json`` in the run
directory; ``evaluate`` and ``export`` rebuild the data pipeline from it. It imports
no TensorFlow (the choices come from ``tfp_vae.names``), so ``tfp-vae train`` checks a
configuration in a fraction of a second, before TensorFlow is loaded.
"""

import dataclasses
import json
import math
from typing import Optional, Tuple

from tfp_vae import names

MODELS = names.MODELS


@dataclasses.dataclass
class TrainConfig:
    # data
    dataset: str = "mnist5k"
    data_dir: Optional[str] = None
    pad: Optional[bool] = None  # None: pad only when the network needs it (conv, 28x28)
    binarize: Optional[str] = None  # None | "static" | "dynamic"
    validation_fraction: float = 0.1
    # model
    model: str = "vae"  # "vae" | "ae"
    network: str = "mlp"
    hidden: Tuple[int, ...] = (512, 256)
    latent_dim: int = 2
    # VAE only: "zeros" is Keras' start; "data-mean" starts the decoder's output bias at the
    # likelihood's inverse of the training data's mean (networks.initialize_output_bias).
    # Measured on mnist5k (bench/bench_quality.py): ahead at 30 epochs, not at 100.
    output_bias: str = "zeros"
    posterior: str = "diag"
    prior: str = "normal"
    num_components: int = 10  # mixture components (mog) or pseudo-inputs (vamp)
    likelihood: str = "bernoulli"
    gaussian_variance: float = 0.01
    gaussian_scale: str = "fixed"  # fixed | global | pixel
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    kl: str = "auto"  # how the KL term is trained: auto | analytic | sampled | path
    objective: str = "elbo"
    num_train_samples: int = 1
    # autoencoder variants
    ae_loss: str = "bce"
    sparsity: Optional[str] = None
    sparsity_weight: float = 1e-3
    sparsity_target: float = 0.05
    noise: Optional[str] = None
    noise_level: float = 0.3
    # optimization
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    seed: int = 0
    early_stopping_patience: int = 0  # 0: off
    # XLA for the training step; with a whole epoch per execution it sped the MLP up about
    # 1.6x on 2 CPU cores and slowed the conv network (bench/bench_speed.py), so it is off.
    jit_compile: bool = False
    # Training steps run per call into TensorFlow (Keras' steps_per_execution); the same
    # steps and result, less Python between steps. The progress bar and batch-level
    # callbacks see every this many steps.
    steps_per_execution: int = 1
    # distribution (tfp_vae.distribute); batch_size is the global batch
    strategy: str = "none"  # none | mirrored | multi_worker
    num_replicas: Optional[int] = None  # written by train; if given, the strategy must have this many
    # evaluation
    eval_samples: int = 1000
    eval_examples: Optional[int] = None  # None: the whole test split
    pictures: bool = True

    def validate(self):
        """Raises ValueError naming the first bad field, its value and what was expected."""

        def one_of(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not valid; expected one of {list(allowed)}.")

        def positive_int(name, allow_zero=False, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok or value < (0 if allow_zero else 1):
                kind = "a non-negative" if allow_zero else "a positive"
                raise ValueError(f"{name}={value!r} is not valid; expected {kind} integer.")

        def positive_float(name, allow_zero=False, upper=None):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
            ok = ok and (upper is None or value < upper)
            if not ok:
                bound = f" below {upper}" if upper is not None else ""
                sign = ">= 0" if allow_zero else "> 0"
                raise ValueError(f"{name}={value!r} is not valid; expected a finite number {sign}{bound}.")

        if not (self.dataset in names.DATASETS or str(self.dataset).endswith((".npy", ".npz"))):
            raise ValueError(
                f"dataset={self.dataset!r} is not valid; expected one of {list(names.DATASETS)} "
                "or a path to a .npy/.npz file."
            )
        one_of("binarize", names.BINARIZE)
        one_of("model", MODELS)
        one_of("network", names.registered("networks"))
        one_of("posterior", names.registered("posteriors"))
        one_of("prior", names.registered("priors"))
        one_of("likelihood", names.registered("likelihoods"))
        one_of("gaussian_scale", names.GAUSSIAN_SCALES)
        one_of("objective", names.OBJECTIVES)
        one_of("kl", names.KL_METHODS)
        one_of("ae_loss", names.AE_LOSSES)
        one_of("strategy", names.STRATEGIES)
        one_of("output_bias", names.OUTPUT_BIAS)
        if self.output_bias != "zeros" and self.model != "vae":
            raise ValueError(
                f"output_bias={self.output_bias!r} is not valid with model={self.model!r}; expected "
                "output_bias 'zeros' (the data-mean start is for a VAE's likelihood)."
            )
        one_of("sparsity", names.SPARSITY)
        one_of("noise", names.NOISE)
        for name in ("latent_dim", "num_components", "num_train_samples", "epochs",
                     "batch_size", "eval_samples"):
            positive_int(name)
        positive_int("kl_warmup_epochs", allow_zero=True)
        positive_int("early_stopping_patience", allow_zero=True)
        positive_int("eval_examples", allow_none=True)
        positive_int("steps_per_execution")
        if self.kl_warmup_epochs and self.steps_per_execution > 1:
            raise ValueError(
                f"steps_per_execution={self.steps_per_execution} is not valid with "
                f"kl_warmup_epochs={self.kl_warmup_epochs}: the KL ramp moves every step; "
                "expected steps_per_execution 1."
            )
        positive_int("num_replicas", allow_none=True)
        if self.num_replicas is not None and self.batch_size % self.num_replicas:
            raise ValueError(
                f"batch_size={self.batch_size} is not valid with num_replicas={self.num_replicas}; "
                "expected a multiple of it (the global batch is split evenly across replicas)."
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise ValueError(
                f"seed={self.seed!r} is not valid; expected an integer in [0, 2**32 - 1]."
            )
        if not isinstance(self.jit_compile, bool):
            raise ValueError(f"jit_compile={self.jit_compile!r} is not valid; expected true or false.")
        if self.jit_compile and self.strategy != "none":
            # With two CPU replicas the compiled step reads a replica's variables from the
            # other device and fails; GPUs were not available to check, so refused for all.
            raise ValueError(
                f"jit_compile=True is not valid with strategy={self.strategy!r}; expected "
                "jit_compile false, or strategy 'none'."
            )
        if not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r} is not valid; expected positive integers.")
        positive_float("validation_fraction", allow_zero=True, upper=1)
        positive_float("gaussian_variance")
        positive_float("beta", allow_zero=True)
        positive_float("learning_rate")
        positive_float("sparsity_weight", allow_zero=True)
        positive_float("sparsity_target", upper=1)
        positive_float("noise_level", allow_zero=True)
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}; known keys are {sorted(known)}.")
        d = dict(d)
        if "hidden" in d and d["hidden"] is not None:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)

    @classmethod
    def from_json_file(cls, path):
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"Config file {path!r} is not valid JSON: {e}.") from None
        if not isinstance(d, dict):
            raise ValueError(f"Config file {path!r} must hold a JSON object, got {type(d).__name__}.")
        return cls.from_dict(d)

    def needs_padding(self, image_shape):
        """Whether images must be padded: explicitly asked, or the conv net needs it."""
        if self.pad is not None:
            return self.pad
        if self.network != "conv" or len(image_shape) != 3:
            return False
        return image_shape[0] % 8 != 0 or image_shape[1] % 8 != 0
