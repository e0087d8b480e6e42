"""Commands that run a service or another modality: explain-text, attack-text, serve, batch."""

from __future__ import annotations

from .._checks import PellucidError
from .common import add_model_args, number, seed_flag


def _explain_text_args(p):
    p.add_argument("words", nargs="+", metavar="WORD", help="words to explain, e.g. hyvää gezellig")
    p.add_argument("--model", default="langid", help="a text model (default langid)")
    from ..registry import methods

    names = list(methods("text"))
    p.add_argument("--methods", default=",".join(names),
                   help=f"comma-separated: {', '.join(names)} (integrated_gradients is accepted for ig)")
    p.add_argument("--target", default=None, help="language to explain (name, code or index); default: predicted")
    p.add_argument("--out", default="text.png", help="output PNG (an .html with the same stem is written too)")
    seed_flag(p)


def _explain_text_run(args):
    from ..text.cli import explain_text_run

    explain_text_run(args)


def _attack_text_args(p):
    p.add_argument("word", metavar="WORD", help="the word to attack")
    p.add_argument("--model", default="langid", help="a text model (default langid)")
    p.add_argument("--target", default=None, help="language to reach (name, code or index); default: any other")
    number(p, "--max-edits", integer=True, low=1, default=3)
    number(p, "--beam", integer=True, low=1, default=5)
    p.add_argument("--letters", default=None, help="replacement letters, e.g. 'ascii' for a-z only; default: all")


def _attack_text_run(args):
    from ..text.cli import attack_text_run

    attack_text_run(args)


def _serve_args(p):
    add_model_args(p, images=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; default 127.0.0.1 (this machine only)")
    number(p, "--port", integer=True, low=0, high=65535, default=8000, help="port; 0 picks a free one; default 8000")
    number(p, "--replicas", integer=True, low=1, default=2, help="model copies computing in parallel; default 2")


def _serve_run(args):
    try:
        from ..web import serve
    except ImportError as e:
        raise PellucidError(f"`pellucid serve` needs the web extra: pip install 'pellucid[web]' ({e})") from e
    serve(args.model, args.weights, host=args.host, port=args.port, replicas=args.replicas)


def _batch_args(p):
    p.add_argument("input", metavar="INPUT", help="a folder of images (recursive) or digits-test")
    add_model_args(p, images=False)
    p.add_argument("--methods", default="saliency", help="comma-separated attribution methods")
    from ..adversarial import MINIMAL_ATTACKS

    p.add_argument("--attack", default=None, choices=MINIMAL_ATTACKS, help="also find the minimal epsilon")
    number(p, "--eps", low=0, low_open=True, default=None, hint=" (the largest epsilon the search tries)",
           help="largest epsilon the search tries")
    number(p, "--metric-steps", integer=True, low=2, allow_zero=True, default=20,
           help="deletion/insertion steps; 0 skips them")
    p.add_argument("--out", required=True, help="output folder (rerun with the same arguments to resume)")
    number(p, "--batch-size", integer=True, low=1, default=32, help="images per batch: bounds memory")
    number(p, "--num-workers", integer=True, low=0, default=0, help="DataLoader processes that load images")
    number(p, "--limit", integer=True, low=1, default=None, help="only the first N images")
    seed_flag(p, help="seed of random methods (per image)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    number(p, "--ray-workers", integer=True, low=1, default=2, help="Ray actors (each loads the model once)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. ray://head:10001 or auto")
    p.add_argument("--device", default="cpu", help="cpu or cuda (Ray: one GPU per actor)")
    number(p, "--max-pixels", integer=True, low=1, default=40_000_000, help="larger images are recorded as failed")
    p.add_argument("--fsync", action="store_true", help="fsync every file (survive power loss, not just kill)")
    p.add_argument("--no-progress", action="store_true")


def _batch_run(args):
    from ..batch import explain_dataset

    res = explain_dataset(args.input, args.out, args.model, args.methods, weights=args.weights,
                          attack=args.attack, eps=args.eps, metric_steps=args.metric_steps, seed=args.seed,
                          limit=args.limit, batch_size=args.batch_size, num_workers=args.num_workers,
                          engine=args.engine, ray_workers=args.ray_workers, address=args.address,
                          device=args.device, max_pixels=args.max_pixels, progress=not args.no_progress,
                          fsync=args.fsync)
    print(f"{res.done} explained, {res.failed} failed, {res.skipped} already finished "
          f"({res.images_per_s:.1f} images/s); table {res.out / 'results.sqlite'}; report {res.report}")
