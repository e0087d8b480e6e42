"""Across a data set: ``pellucid scan`` (a model's strategies per class, SpRAy) and ``pellucid diff`` (what moved
between two models). DATA is a folder of images (class sub-folders give labels), a built-in set
(``digits-test``), or, for scan, a batch job's folder, whose stored maps are read rather than computed."""

from __future__ import annotations

from pathlib import Path

from .._checks import PellucidError
from .common import number, seed_flag


def _data_args(p, what: str):
    p.add_argument("data", metavar="DATA", help=f"a folder of images, a built-in set (digits-test, digits-train, "
                                                f"digits){what}")
    p.add_argument("--method", default="lrp", help="attribution method (see `pellucid explain --help`); default lrp")
    number(p, "--limit", integer=True, low=1, default=None, help="at most this many images (in order)")
    number(p, "--size", integer=True, low=4, default=32, help="maps are downsized to this many pixels a side")
    p.add_argument("--out", required=True, help="output HTML page")
    seed_flag(p)


def _scan_args(p):
    _data_args(p, ", or a batch job's folder (its stored maps)")
    p.add_argument("--model", default="digits", help="model name (`pellucid models`); default digits")
    p.add_argument("--weights", default=None, help="weights file, or 'random'")
    p.add_argument("--clusters", default="auto", help="strategies per class: 'auto' (the eigengap) or a number")
    number(p, "--classes", integer=True, low=0, nargs="+", default=None, help="only these classes")


def _diff_args(p):
    _data_args(p, "")
    p.add_argument("--model", default="digits", help="model A (`pellucid models`); default digits")
    p.add_argument("--weights", default=None, help="model A's weights file")
    p.add_argument("--model-b", default=None, help="model B; default: the same architecture as model A")
    p.add_argument("--weights-b", required=True, help="model B's weights file (or 'random')")


def load_data(source: str, model, limit: int | None):
    """``(x, y or None, keys)`` of a folder or a built-in set, fitted to the model (a failed file is an error
    that names it)."""
    import torch

    from ..dataset import list_items, load_item
    from ..dataset.sources import DATASETS

    items = list_items(source, getattr(model, "labels", None), limit)
    if not items:
        raise PellucidError(f"no images in {source!r}")
    data = None
    if source in DATASETS:
        from ..models.data import digits

        data = digits(DATASETS[source])[0]
    size = tuple(getattr(model, "input_size", None) or (3, 224, 224))
    x = torch.stack([load_item(it, size, 4096 * 4096, data) for it in items])
    labels = torch.tensor([it.label for it in items])
    return x, (labels if bool((labels >= 0).all()) else None), [it.key for it in items]


def _stored_maps(folder: Path, method: str, limit: int | None):
    """A batch job's images, labels (the predictions where unknown) and stored maps of ``method``."""
    import numpy as np
    import torch

    from ..batch.store import map_path, read_job, read_results

    job = read_job(folder)
    config = job["config"]
    if method not in config["methods"]:
        raise PellucidError(f"the batch job in {str(folder)!r} stored maps of {', '.join(config['methods'])}, "
                            f"not {method!r}; pass --method with one of them")
    rows = read_results(folder, "done")[:limit]
    if not rows:
        raise PellucidError(f"the batch job in {str(folder)!r} has no finished images")
    maps = torch.stack([torch.from_numpy(np.load(map_path(folder, method, r["key"]))).float() for r in rows])
    y = torch.tensor([r["label"] if r["label"] >= 0 else r["prediction"] for r in rows])
    return config, rows, maps, y


def _scan_run(args):
    import torch

    from ..dataset import scan
    from ..dataset.maps import downsize
    from ..drawing import strategies
    from ..models import load_model

    clusters = args.clusters if args.clusters == "auto" else _positive(args.clusters)
    folder = Path(args.data)
    if folder.is_dir() and (folder / "job.json").exists():
        config, rows, maps, y = _stored_maps(folder, args.method, args.limit)
        model = load_model(config["model"], weights=config.get("weights"))
        x, _, _ = load_data(config["input"], model, None)
        x = x[torch.tensor([r["position"] for r in rows])]  # the job's rows are in its input's order
        result = scan(model, x, y, method=args.method, classes=args.classes, clusters=clusters, seed=args.seed,
                      maps=downsize(maps, args.size))
    else:
        model = load_model(args.model, weights=args.weights)
        x, y, _ = load_data(args.data, model, args.limit)
        result = scan(model, x, y, method=args.method, classes=args.classes, clusters=clusters, size=args.size,
                      seed=args.seed)
    label = getattr(model, "label", str)
    html = strategies.page(f"strategies of {getattr(model, 'name', args.model)}",
                           f"{len(x)} images of {args.data}; {result.method} maps; SpRAy (spectral clustering per "
                           "class)", strategies.scan_sections(result, label))
    out = Path(args.out)
    out.write_text(html, encoding="utf-8")
    flagged = int(result.flagged.sum())
    print(f"wrote {out}: {len(result.classes)} classes, {flagged} image{'s' * (flagged != 1)} flagged")


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise PellucidError(f"--clusters must be 'auto' or a whole number >= 1, got {value!r}")
    return int(value)


def _diff_run(args):
    from ..dataset import diff
    from ..drawing import strategies
    from ..models import load_model

    model_a = load_model(args.model, weights=args.weights)
    model_b = load_model(args.model_b or args.model, weights=args.weights_b)
    x, y, _ = load_data(args.data, model_a, args.limit)
    result = diff(model_a, model_b, x, y, method=args.method, size=args.size, seed=args.seed)
    label = getattr(model_a, "label", str)
    html = strategies.page("what moved between two models", f"A: {args.model} ({args.weights or 'built-in'}); B: "
                           f"{args.model_b or args.model} ({args.weights_b}); {len(x)} images of {args.data}",
                           strategies.diff_sections(result, label))
    out = Path(args.out)
    out.write_text(html, encoding="utf-8")
    print(f"wrote {out}: {int(result.moved.sum())} of {len(x)} images moved beyond the null, "
          f"{int(result.changed.sum())} changed prediction")
