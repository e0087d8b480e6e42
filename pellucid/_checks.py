"""Input validation shared by every public function: one clear message per bad value."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers

import torch

INT64_MAX = 2**63 - 1


class PellucidError(ValueError):
    """A bad argument: the message names the value and what would be accepted."""


def check_images(x: torch.Tensor, model=None, name: str = "x") -> torch.Tensor:
    """Validate an image batch ``(N, C, H, W)`` in ``[0, 1]`` and return it detached.

    The caller's tensor is never modified: the result shares storage but not autograd state.
    """
    if not isinstance(x, torch.Tensor):
        raise PellucidError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (for one image use x.unsqueeze(0))" if x.dim() == 3 else ""
        raise PellucidError(
            f"{name} must have 4 dims (N, C, H, W), got {x.dim()} dims with shape {tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        hint = f"; convert with {name}.float() / 255" if x.dtype == torch.uint8 else ""
        raise PellucidError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}{hint}")
    if x.device.type == "meta":
        raise PellucidError(f"{name} is on the meta device (a shape without data); pass a tensor with pixel values")
    if x.shape[0] == 0:
        raise PellucidError(f"{name} is an empty batch (N = 0); pass at least one image")
    channels = getattr(model, "input_size", None)
    if channels is not None and x.shape[1] != channels[0]:
        raise PellucidError(
            f"{name} has {x.shape[1]} channels but the model expects {channels[0]} "
            f"(input_size {tuple(channels)}); convert with pl.load_image or repeat/average channels"
        )
    if getattr(model, "strict_size", False) and tuple(x.shape[-2:]) != tuple(channels[1:]):
        raise PellucidError(
            f"{name} is {x.shape[-2]}x{x.shape[-1]} but the model takes exactly {channels[1]}x{channels[2]} images "
            f"(input_size {tuple(channels)}); resize with pl.load_image(path, model) or F.interpolate"
        )
    xd = x.detach()
    want = model_dtype(model)
    if want is not None and xd.dtype != want:
        xd = xd.to(want)  # float64 (or half) images for a float32 model: converted, the caller's tensor untouched
    if torch.isnan(xd).any():
        raise PellucidError(f"{name} contains NaN values; images must be finite values in [0, 1]")
    lo, hi = float(xd.min()), float(xd.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise PellucidError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}] but pellucid works in pixel space [0, 1]; "
            "put normalization inside the model with pl.wrap(module, mean=..., std=...)"
        )
    return xd


def model_dtype(model) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer (``None`` if it has none)."""
    if not isinstance(model, torch.nn.Module):
        return None
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An int >= ``minimum`` (that fits int64); numpy integers are converted, bools and floats refused."""
    return check_number(value, name, minimum, integer=True)


def _num(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _shown(value) -> str:
    """A bad value for a message: numbers as Python shows them (``nan``, ``-1``), anything else by repr."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        text = repr(int(value))
        return text if len(text) <= 30 else f"{text[:12]}... ({len(text.lstrip('-'))} digits)"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)[:80]


def check_number(value, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, allow_zero: bool = False, integer: bool = False, hint: str = ""):
    """The one check of a numeric option: a finite number (``integer``: an int that fits int64) between ``low``
    and ``high`` (closed bounds unless ``low_open`` / ``high_open``; ``None``: unbounded), or 0 as well with
    ``allow_zero``. numpy scalars and one-element tensors are converted (to ``float``, or ``int``); NaN, infinities,
    bools, strings and values out of range are a :class:`PellucidError` naming ``name``, the range and the value
    (``hint`` says what the number means)."""
    v = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0 else value
    ok = not isinstance(v, bool) and isinstance(v, numbers.Integral if integer else numbers.Real)
    if ok:
        try:
            v = int(v) if integer else float(v)
        except OverflowError:  # an int past float's range: as infinite
            v, ok = float("inf"), False
        ok = ok and (math.isfinite(v) if not integer else -INT64_MAX - 1 <= v <= INT64_MAX)
        in_range = (low is None or (v > low if low_open else v >= low)) and \
            (high is None or (v < high if high_open else v <= high))
        ok = ok and (in_range or (allow_zero and v == 0))
    if ok:
        return v
    if low is not None and high is not None:
        span = f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    elif low is not None:
        span = f"{'>' if low_open else '>='} {_num(low)}"
    elif high is not None:
        span = f"{'<' if high_open else '<='} {_num(high)}"
    else:
        span = ""
    what = ("an int" if integer else "a finite number") + (f" {span}" if span else "")
    if integer and high is None and isinstance(v, int) and v > INT64_MAX:
        what += " that fits int64"
    raise PellucidError(f"{name} must be {'0 or ' if allow_zero else ''}{what}{hint}, got {_shown(value)}")


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise PellucidError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")
    return value


def fill_like(value, x: torch.Tensor, name: str = "fill", extra: str = "") -> torch.Tensor:
    """A batch like ``x`` from a number or a tensor that broadcasts to it (a baseline or fill value).

    ``extra`` names further accepted values in the message (``", 'blur' or 'noise'"``). NaN or infinite
    values are refused: they would make every map NaN without a word.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        accepted = f"a number, a tensor broadcastable to x {tuple(x.shape)}{extra}" if extra else \
            f"a number or a tensor broadcastable to x {tuple(x.shape)}"
        raise PellucidError(f"{name} must be {accepted}; got {value!r}")
    try:
        out = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value,
                              dtype=x.dtype, device=x.device).expand_as(x)
    except RuntimeError:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
        raise PellucidError(f"{name} of shape {shape} does not broadcast to x {tuple(x.shape)}") from None
    if not torch.isfinite(out).all():
        raise PellucidError(f"{name} contains NaN or infinite values; pass finite numbers (pixel space [0, 1])")
    return out


def generator(seed, device) -> torch.Generator:
    """The one rule for randomness: a ``torch.Generator`` passes through, an int seeds a new one on
    ``device``; the global RNG is never used."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PellucidError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# keyword arguments: an unknown name is a PellucidError that lists the accepted ones

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def keyword_names(fn) -> tuple[str, ...] | None:
    """The keyword arguments ``fn`` accepts, in signature order; ``None`` when it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in _NAMED)


def option_names(fn) -> list[str]:
    """``fn``'s options: its keyword arguments with a default, or keyword-only (not model, x, target)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY or (p.kind in _NAMED and p.default is not p.empty)]


def unknown_keyword(kwargs, accepted, where: str, options) -> PellucidError | None:
    """The error for the first name of ``kwargs`` not in ``accepted``, listing ``options`` (with a close
    match), or ``None`` when every name is known."""
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return PellucidError(f"{where} got an unknown argument {key!r}{hint}; its options are: "
                                 f"{', '.join(options) or '(none)'}")
    return None


def checked_keywords(fn):
    """Decorator of a public function: an unknown keyword argument is a :class:`PellucidError` that names it
    and lists the accepted names, not Python's ``TypeError``. Name, docs and signature stay ``fn``'s
    (``functools.wraps``); a function that takes ``**kwargs`` checks them itself."""
    names = keyword_names(fn)
    if names is None:
        return fn
    accepted = frozenset(names)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        if not accepted.issuperset(kwargs):
            raise unknown_keyword(kwargs, accepted, fn.__name__, option_names(fn))
        return fn(*args, **kwargs)

    return checked


def forwards(public, *, bound: tuple[str, ...] = ()):
    """Decorator of a record's wrapper ``fn(model, x, target, [own options], **kw)`` that passes ``**kw`` on
    to ``public``: the wrapper's signature becomes its own named parameters followed by ``public``'s other
    keyword parameters (minus those the wrapper ``bound`` itself), so ``inspect.signature``, ``help`` and the
    registry's check of unknown options see every option. ``public``'s ``**kwargs``, if any, stay open."""
    def decorate(wrapper):
        own = inspect.signature(wrapper)
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        taken = {p.name for p in params} | set(bound)
        theirs = inspect.signature(public).parameters.values()
        params += [p.replace(kind=p.KEYWORD_ONLY) for p in theirs if p.kind in _NAMED and p.name not in taken]
        params += [p for p in theirs if p.kind is p.VAR_KEYWORD]
        wrapper.__signature__ = own.replace(parameters=params)
        return wrapper

    return decorate
