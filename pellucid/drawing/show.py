"""``pl.show``: one call that draws anything pellucid computes, for Jupyter or a file.

Result objects draw themselves (their ``_repr_png_``, :mod:`.display`); plain tensors cannot, so
:func:`show` decides from the shapes: an image batch becomes a grid, maps over images the report's
overlays, an adversarial batch beside its ``original`` the attack rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .._checks import PellucidError
from . import display, render


def show(obj, x: torch.Tensor | Sequence[str] | None = None, *, titles: Sequence[str] | None = None,
         model=None, original: torch.Tensor | None = None, ncols: int | None = None) -> display.Figure:
    """A :class:`~pellucid.drawing.display.Figure` of ``obj`` that Jupyter displays and ``.save(path)`` writes.

    - a result (``pl.fooling_image``, ``pl.autoattack``, ``pl.deletion``, ``pl.srg``, ``pl.compare``,
      ``pl.visualize``, ``pl.lrp``, ...): its own picture (``pl.show(lrp_result, x)``: the relevance over ``x``);
    - an image batch ``(N, C, H, W)`` in [0, 1]: a grid of ``ncols`` columns, titled by ``titles`` or, with ``model=``,
      by its predictions;
    - maps ``(N, H, W)`` or ``(N, C, H, W)`` (channels summed) with their images ``x``, or ``{method: map}``
      (``pl.explain``) with ``x``: the report's heat maps over the images (signed maps red/blue around 0);
      maps without ``x`` (a 4-D tensor with values outside [0, 1] is a map): the maps alone;
    - an adversarial batch with ``original=`` (``pl.fgsm``, ``pl.pgd``, ...): original | adversarial |
      difference, with ``model=`` the predicted class and its probability over each;
    - ``{method: [per-character values]}`` (``pl.explain_text``) with its words ``x``: the letters coloured;
    - the path of an HTML report: the page.

    >>> pl.show(pl.explain(model, x, y, ["saliency", "gradcam"]), x, model=model)
    >>> pl.show(pl.fgsm(model, x, y, 0.1), original=x, model=model).save("fgsm.png")
    """
    if isinstance(obj, (str, Path)):
        return _page(Path(obj))
    if isinstance(obj, display.Figure):
        return obj
    if isinstance(obj, torch.Tensor):
        return _tensor(obj, x, titles, model, original, ncols)
    if isinstance(obj, dict) and obj:
        return _named(obj, x, titles, model)
    if hasattr(obj, "_repr_png_"):
        from ..attribution.lrp import LRPResult

        if isinstance(obj, LRPResult) and isinstance(x, torch.Tensor):
            return _tensor(obj.input, x, titles, model, None, ncols)
        if hasattr(obj, "_repr_mimebundle_"):  # drawn once for both formats
            data = obj._repr_mimebundle_()
            return display.Figure(data.get("image/png"), data.get("text/html"))
        html = getattr(obj, "_repr_html_", None)
        return display.Figure(obj._repr_png_(), html() if html else None)
    raise PellucidError(f"pl.show draws image batches, maps, pellucid results, {{method: map}} dicts and report "
                        f"paths; got {type(obj).__name__}")


def _titles(titles, model, images: torch.Tensor) -> list[str] | None:
    if titles is not None:
        titles = [str(t) for t in titles]
        if len(titles) != len(images):
            raise PellucidError(f"titles has {len(titles)} entries for {len(images)} images; give one per image")
        return titles
    if model is None:
        return None
    from .._grad import predictions

    return render.image_row_titles(model, predictions(model, images), None)


def _images(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise PellucidError(f"{what} must be an image batch (N, C, H, W) in [0, 1], got {shape}")
    return x.detach()


def _maps(m: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    """``(N, h, w)`` maps for the images ``x``: ``(N, C, h, w)`` summed over channels; a map smaller than its
    image (a CAM, a layer's activations) is stretched over it when drawn."""
    m = m.sum(1) if m.dim() == 4 else m[None] if m.dim() == 2 and len(x) == 1 else m
    if m.dim() != 3 or len(m) != len(x):
        raise PellucidError(f"{what} has shape {tuple(m.shape)} but the images are {tuple(x.shape)}; give one map "
                            f"per image: ({len(x)}, H, W) or ({len(x)}, C, H, W)")
    return m.float()


def _tensor(t: torch.Tensor, x, titles, model, original, ncols) -> display.Figure:
    t = t.detach()
    if original is not None:
        original = _images(original, "original")
        adv = _images(t, "the adversarial batch")
        if adv.shape != original.shape:
            raise PellucidError(f"the adversarial batch {tuple(adv.shape)} and original {tuple(original.shape)} "
                                "differ in shape")
        if model is not None:
            from .._grad import predictions

            return display.Figure(display.small(render.attack_rows, original, adv, predictions(model, original),
                                                predictions(model, adv), getattr(model, "label", str)))
        return display.Figure(display.attack(original, adv, ["original"] * len(adv), ["adversarial"] * len(adv)))
    if x is not None:
        x = _images(x, "x")
        return display.Figure(display.maps(x, {"map": _maps(t, x, "the map")}, _titles(titles, model, x)))
    if t.dim() == 4 and 0 <= float(t.min()) and float(t.max()) <= 1:
        return display.Figure(display.images(t, _titles(titles, model, t), ncols))
    if t.dim() in (2, 3, 4):  # maps; values outside [0, 1] make a 4-D tensor an attribution, not images
        m = t.sum(1) if t.dim() == 4 else t if t.dim() == 3 else t[None]
        return display.Figure(display.heat(m, _titles(titles, None, m), ncols))
    raise PellucidError(f"pl.show takes images (N, C, H, W) or maps (N, H, W); got a tensor of shape {tuple(t.shape)}")


def _named(named: dict, x, titles, model) -> display.Figure:
    values = list(named.values())
    if all(isinstance(v, torch.Tensor) for v in values):
        if x is None:
            raise PellucidError("pl.show({method: map}) needs the images the maps explain: pl.show(maps, x)")
        x = _images(x, "x")
        maps = {str(k): _maps(v.detach(), x, f"the map {k!r}") for k, v in named.items()}
        return display.Figure(display.maps(x, maps, _titles(titles, model, x)))
    if all(isinstance(v, (list, tuple)) for v in values):
        from ..text.render import text_html, text_png

        if x is None or isinstance(x, (str, torch.Tensor)) or len(x) != len(values[0]):
            raise PellucidError("pl.show({method: [values per word]}) needs its words: pl.show(maps, words)")
        words = [str(w) for w in x]
        titles = None if titles is None else [str(t) for t in titles]
        return display.Figure(display.small(text_png, words, named, titles), text_html(words, named, titles))
    raise PellucidError("pl.show takes {method: (N, H, W) map} (pl.explain) or {method: [values per word]} "
                        "(pl.explain_text)")


def _page(path: Path) -> display.Figure:
    """An HTML report in a frame (the page is self-contained, so it reads from the notebook as it is)."""
    import html

    if path.is_dir():
        path = path / "index.html"
    if path.suffix.lower() not in (".html", ".htm") or not path.is_file():
        raise PellucidError(f"pl.show(path) shows an HTML report (a .html file or a folder with index.html); "
                            f"{str(path)!r} is not one")
    page = path.read_text(encoding="utf-8")
    return display.Figure(None, f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:640px;'
                                f'border:1px solid #ccc" title="{html.escape(path.name)}"></iframe>')
