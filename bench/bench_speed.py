"""Training speed of tfp_vae against both peers, side by side in one process.

MLP (mnist5k 28x28, MLP 512-256, latent 16, batch 100, dynamic binarization, Adam 1e-3):
  tfp_vae diag, compiled with each setting in ``--settings`` (jit_compile x steps_per_execution)
  tfp.layers   the tfp.layers VAE on tf_keras (bench/tfp_layers_peer.py), default compile
Conv (mnist5k padded to 32x32, the source's conv network, latent 2, batch 100):
  tfp_vae diag, each setting
  plain keras  the Keras VAE example's structure (bench/bench_training.py), default compile
``--peer-settings`` also times the peers compiled with the given settings (the same
steps_per_execution / XLA the project gets); ratios stay against the default-compiled peer.

All models of a group see the same batches (the same tf.data pipeline and seed). After a
warm-up epoch each, the models take turns (``--epochs-per-round`` epochs for the MLP, one
for the conv model, per turn), in an order that rotates every round, so drifting load on the shared machine falls on all alike.
Reported: median examples/s over rounds, and the median over rounds of the per-round
ratio to the peer (a paired estimate). For the conv model the achieved FLOP rate is
set against a 2048 x 2048 float32 matmul's measured rate (interleaved with the rounds).
FLOPs per training example: 3x the forward multiply-adds x 2, counted layer by layer.

Usage:
  python bench/bench_speed.py --rounds 7
"""

import argparse
import time

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import keras
import numpy as np
import tensorflow as tf

import tfp_vae
from tfp_vae import data as data_lib

SETTINGS = {  # name: (jit_compile, steps_per_execution)
    "eager-graph": (False, 1),  # Keras' default on CPU (jit_compile="auto" resolves to off)
    "xla": (True, 1),
    "spe": (False, None),  # None: every step of the epoch in one execution
    "xla+spe": (True, None),
}


def tfp_vae_model(network, data_shape, latent_dim, hidden, setting, steps_per_epoch, seed):
    keras.utils.set_random_seed(seed)
    encoder, decoder = tfp_vae.networks.build(network, latent_dim, data_shape, hidden)
    model = tfp_vae.VAE(encoder, decoder, latent_dim, posterior="diag", seed=seed)
    jit, spe = SETTINGS[setting]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit,
                  steps_per_execution=spe or steps_per_epoch)
    return model


def peer_model(data_shape, latent_dim, hidden, x_probe, seed, setting="eager-graph", steps_per_epoch=1):
    import tf_keras
    import tfp_layers_peer as peer

    tf_keras.utils.set_random_seed(seed)
    vae, *_ = peer.build_counting_kl_once("IndependentNormal", data_shape, x_probe,
                                          latent_dim=latent_dim, hidden=hidden)
    jit, spe = SETTINGS[setting]
    vae.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss=peer.negative_log_likelihood,
                jit_compile=jit, steps_per_execution=spe or steps_per_epoch)
    return vae


def plain_model(data_shape, latent_dim, seed, setting="eager-graph", steps_per_epoch=1):
    from bench_training import PlainVAE

    keras.utils.set_random_seed(seed)
    model = PlainVAE(latent_dim, data_shape, seed=seed)
    model.build((None, *data_shape))
    jit, spe = SETTINGS[setting]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit,
                  steps_per_execution=spe or steps_per_epoch)
    return model


def _peer_name(base, setting):
    """The peer with Keras' default compile keeps its plain name (the ratios' reference)."""
    return base if setting == "eager-graph" else f"{base} {setting}"


def conv_flops_per_example(model):
    """2 x multiply-adds of one forward pass of encoder + head + decoder, times 3 for training."""
    total = 0
    for net in (model.encoder, model.decoder):
        shape = net.input_shape
        for layer in net.layers:
            out = layer.compute_output_shape(shape)
            if isinstance(layer, keras.layers.Conv2DTranspose):
                k = np.prod(layer.kernel_size)
                total += 2 * np.prod(shape[1:3]) * k * shape[-1] * layer.filters
            elif isinstance(layer, keras.layers.Conv2D):
                k = np.prod(layer.kernel_size)
                total += 2 * np.prod(out[1:3]) * k * shape[-1] * layer.filters
            elif isinstance(layer, keras.layers.Dense):
                total += 2 * shape[-1] * layer.units
            shape = out
    head = model.posterior_head
    total += 2 * head.kernel.shape[0] * head.kernel.shape[1]
    return 3 * int(total)


def matmul_gflops(n=2048, repeats=5):
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    mm = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    mm(a, b).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).numpy()
        rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return _common.median(rates)


def run_group(title, models, data, n_examples, rounds, peer_name, matmul=False, epochs=1):
    print(f"\n{title}")
    for name, (model, ds) in models.items():
        start = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s")
    names = list(models)
    rates = {n: [] for n in names}
    mm = []
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            model, ds = models[name]
            start = time.perf_counter()
            model.fit(ds, epochs=epochs, verbose=0)
            rates[name].append(epochs * n_examples / (time.perf_counter() - start))
        if matmul:
            mm.append(matmul_gflops(repeats=3))
        print(f"  round {r + 1:2d}: " + ", ".join(f"{n} {rates[n][-1]:7.0f}" for n in names)
              + f" ex/s   load {_common.load_average()}", flush=True)
    print(f"  {'model':22s} {'median ex/s':>12s} {'ratio to ' + peer_name + ' (median of per-round ratios; IQR)':>52s}")
    summary = {}
    for name in names:
        paired = [a / b for a, b in zip(rates[name], rates[peer_name])]
        lo, hi = _common.quartiles(paired)
        summary[name] = {"median": _common.median(rates[name]), "ratio": _common.median(paired),
                         "ratio_q25": lo, "ratio_q75": hi, "rates": rates[name]}
        print(f"  {name:22s} {summary[name]['median']:12.0f} {summary[name]['ratio']:30.3f} ({lo:.3f}-{hi:.3f})")
    return summary, mm


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--settings", nargs="+", default=["eager-graph", "xla", "xla+spe"],
                   choices=list(SETTINGS),
                   help="tfp_vae compile settings to time (default: eager-graph xla xla+spe)")
    p.add_argument("--peer-settings", nargs="+", default=["eager-graph"], choices=list(SETTINGS),
                   help="compile settings of the peers too (default: eager-graph, Keras' default, "
                        "the reference of the ratios; others are timed beside it)")
    p.add_argument("--epochs-per-round", type=int, default=3,
                   help="epochs each model trains per turn (one fit call; default 3)")
    p.add_argument("--conv-examples", type=int, default=2000)
    p.add_argument("--groups", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    env = _common.print_environment()
    batch = 100
    result = {"environment": env, "args": vars(args)}
    if "mlp" in args.groups:
        (x, _), _ = data_lib.load("mnist5k")
        x = x[:4000]
        steps = len(x) // batch
        ds = data_lib.binarized_batches(x, batch, seed=args.seed)
        models = {f"tfp_vae {s}": (tfp_vae_model("mlp", x.shape[1:], 16, (512, 256), s, steps, args.seed), ds)
                  for s in args.settings}
        probe = (x[:batch] > 0.5).astype(np.float32)
        for s in dict.fromkeys(["eager-graph", *args.peer_settings]):
            models[_peer_name("tfp.layers", s)] = (
                peer_model(x.shape[1:], 16, (512, 256), probe, args.seed, s, steps),
                ds.map(lambda b: (b, b)))
        result["mlp"], _ = run_group(
            f"MLP 512-256, latent 16, {len(x)} examples per epoch, batch {batch}",
            models, ds, len(x), args.rounds, "tfp.layers", epochs=args.epochs_per_round)
    if "conv" in args.groups:
        (x, _), _ = data_lib.load("mnist5k", pad=True)
        x = x[: args.conv_examples]
        steps = len(x) // batch
        ds = data_lib.binarized_batches(x, batch, seed=args.seed)
        models = {f"tfp_vae {s}": (tfp_vae_model("conv", x.shape[1:], 2, None, s, steps, args.seed), ds)
                  for s in args.settings}
        for s in dict.fromkeys(["eager-graph", *args.peer_settings]):
            models[_peer_name("plain keras", s)] = (plain_model(x.shape[1:], 2, args.seed, s, steps), ds)
        summary, mm = run_group(
            f"conv (source network), latent 2, {len(x)} examples per epoch, batch {batch}",
            models, ds, len(x), args.rounds, "plain keras", matmul=True, epochs=1)
        flops = conv_flops_per_example(models[f"tfp_vae {args.settings[0]}"][0])
        rate = _common.median(mm)
        print(f"\n  conv training: {flops / 1e6:.1f} MFLOP per example (3 x forward)")
        for name, s in summary.items():
            print(f"  {name:22s} {s['median'] * flops / 1e9:6.2f} GFLOP/s achieved = "
                  f"{100 * s['median'] * flops / 1e9 / rate:5.1f}% of the 2048^2 matmul's {rate:.1f} GFLOP/s")
        result["conv"] = summary
        result["conv_flops_per_example"] = flops
        result["matmul_gflops"] = mm
    if args.json:
        _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
