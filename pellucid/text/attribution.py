"""Which characters made it say Finnish? Attribution per character for text models (``langid``).

Every method returns a list with one ``(len(word),)`` tensor per word. They run on the image core:
rows are built by a function ``slice -> one-hot rows`` and handed to the shared pieces in chunks of
``batch_size`` (``iter_gradients``, ``path_integral`` and ``perturbation_scores`` of :mod:`pellucid._grad`,
``fit_surrogate`` of :mod:`pellucid._surrogate`), targets are :class:`~pellucid.targets.Target`
objects, and the model runs inside :func:`~pellucid._state.model_state`. One model call only ever
sees words of one length, so words are processed per length group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .. import registry
from .._checks import PellucidError, check_choice, check_positive_int, generator
from .._grad import iter_gradients, path_integral, perturbation_scores, quadrature, row_index
from .._state import model_state
from .._surrogate import fit_surrogate
from ..models.langid import by_length, word_logits
from ..targets import SCORES, Target, as_target

Words = str | Sequence[str]
DEFAULT_BATCH = 128  # one-hot rows per GRU call; small words, so larger chunks than for images
MAX_WORD = 64
"""The longest word accepted (letters). Occlusion and LIME cost grows with the square of the length: on two
CPU cores all four methods take 0.3 s at 64 letters, 1.9 s at 300, 10 s at 1,000 and minutes beyond; the
longest training word has 25 letters and the longest Finnish compounds about 60."""


def check_text_model(model) -> nn.Module:
    if not isinstance(model, nn.Module) or not hasattr(model, "alphabet") or not hasattr(model, "encode"):
        raise PellucidError(f"expected a text model such as pl.load_model('langid'), got {type(model).__name__}")
    return model


def check_words(words: Words, model) -> list[str]:
    """Validate words against the model's alphabet and return them lowercased.

    Errors name the bad value: an empty word, a word over :data:`MAX_WORD` letters, the characters outside
    the alphabet, a non-string.
    """
    items = [words] if isinstance(words, str) else words
    if not isinstance(items, Sequence) or isinstance(items, bytes):
        raise PellucidError(f"words must be a string or a sequence of strings, got {type(words).__name__}")
    if len(items) == 0:
        raise PellucidError("no words given; pass a word like 'hyvää' or a list of words")
    alphabet, out = set(model.alphabet), []
    for i, w in enumerate(items):
        if not isinstance(w, str):
            raise PellucidError(f"word {i} must be a string, got {type(w).__name__} {w!r}")
        low = w.strip().lower()
        if not low:
            raise PellucidError(f"word {i} is empty ({w!r}); every word needs at least one letter")
        if len(low) > MAX_WORD:
            shown = low[:20] + "..."
            raise PellucidError(f"word {i} ({shown!r}) has {len(low):,} letters; at most {MAX_WORD} are accepted "
                                "(one word per item: split a text into words)")
        bad = sorted({c for c in low if c not in alphabet})
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            raise PellucidError(f"word {w!r} has characters outside the {getattr(model, 'name', 'model')} alphabet: "
                                f"{shown}. Accepted: the letters {model.alphabet}")
        out.append(low)
    return out


def language_index(value, model) -> int:
    """A class index from an int, a language name (``"dutch"``) or its code (``"nl"``), any case."""
    labels = [str(lb).lower() for lb in model.labels]
    codes = [str(c).lower() for c in getattr(model, "codes", ())]
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(labels):
            return value
        raise PellucidError(f"language index {value} is out of range: the model has classes 0..{len(labels) - 1}")
    if isinstance(value, str):
        v = value.strip().lower()
        if v.isdigit():
            return language_index(int(v), model)
        if v in labels:
            return labels.index(v)
        if v in codes:
            return codes.index(v)
    extra = f" (or {', '.join(codes)})" if codes else ""
    raise PellucidError(f"unknown language {value!r}; choose one of: {', '.join(labels)}{extra}")


def text_target(model, words: list[str], target, score: str = "logit") -> Target:
    """``None``: the predicted language; a name/code/int, or one per word; or a callable on logits."""
    if target is None:
        target = word_logits(model, words).argmax(1).cpu()
    elif isinstance(target, str | int) and not isinstance(target, bool):
        target = language_index(target, model)
    elif isinstance(target, Sequence) and not isinstance(target, str):
        target = [language_index(t, model) for t in target]
    return as_target(target, len(words), model.num_classes, score)


@contextmanager
def _rnn_state(model: nn.Module, words: Words, target, score: str, batch_size: int | None):
    """Checked words, their Target and chunk size, with the model in eval mode and frozen.

    cuDNN's GRU backward refuses eval mode, so cuDNN is off inside (CPU is unaffected).
    """
    check_text_model(model)
    words = check_words(words, model)
    check_choice(score, "score", SCORES)
    bs = DEFAULT_BATCH if batch_size is None else check_positive_int(batch_size, "batch_size")
    tgt = text_target(model, words, target, score)
    with model_state(model), torch.backends.cudnn.flags(enabled=False):
        yield words, tgt, bs


def _groups(model, words: list[str], tgt: Target) -> Iterator[tuple[list[int], torch.Tensor, Target]]:
    """Per length: the word positions, their one-hot ``(n, L, A)`` and their Target."""
    device = next(model.parameters()).device
    for _, rows in sorted(by_length(words).items()):
        yield rows, model.encode([words[i] for i in rows], device), tgt.select(torch.tensor(rows))


# ---------------------------------------------------------------------------------------------


def text_input_x_gradient(model: nn.Module, words: Words, target=None, score: str = "logit",
                          batch_size: int | None = None) -> list[torch.Tensor]:
    """Gradient x input per character: the gradient of the score at each character's one-hot entry.

    Example: ``pl.text_input_x_gradient(model, ["hyvää"])[0]`` is a ``(5,)`` tensor.
    """
    with _rnn_state(model, words, target, score, batch_size) as (words, tgt, bs):
        out: list = [None] * len(words)
        for rows, x, t in _groups(model, words, tgt):
            for sl, g, _ in iter_gradients(model, x, len(x), t, bs):
                for j, a in zip(rows[sl], (g * x[sl]).sum(-1)):
                    out[j] = a
    return out


def text_integrated_gradients(model: nn.Module, words: Words, target=None, steps: int = 128,
                              baseline: str = "zeros", rule: str = "gausslegendre", score: str = "logit",
                              batch_size: int | None = None) -> list[torch.Tensor]:
    """Integrated Gradients (Sundararajan et al. 2017) on the one-hot input, summed per character.

    The baseline is the all-zero one-hot (``"zeros"``: no letter at any position) or ``"uniform"``
    (every letter at 1/A). The values of a word sum to ``f(word) - f(baseline)`` up to the quadrature
    error (Gauss-Legendre: below 1% at 128 steps on langid).
    """
    check_choice(baseline, "baseline", ("zeros", "uniform"))
    with _rnn_state(model, words, target, score, batch_size) as (words, tgt, bs):
        out: list = [None] * len(words)
        for rows, x, t in _groups(model, words, tgt):
            alphas, weights = quadrature(steps, rule, x.device)
            base = torch.zeros_like(x) if baseline == "zeros" else torch.full_like(x, 1 / x.shape[-1])
            avg = path_integral(model, x, base, t, alphas, weights, bs)
            for j, a in zip(rows, ((x - base) * avg).sum(-1)):
                out[j] = a
    return out


def _deleted(x: torch.Tensor) -> Callable[[slice], torch.Tensor]:
    """Rows ``word * L + i``: word ``word`` of ``x (n, L, A)`` without its character ``i``."""
    L = x.shape[1]
    ar = torch.arange(L, device=x.device)
    keep = torch.stack([torch.cat([ar[:i], ar[i + 1 :]]) for i in range(L)])  # (L, L-1)

    def rows(sl: slice) -> torch.Tensor:
        word, i = row_index(sl, L, x.device)
        return x[word[:, None], keep[i]]

    return rows


def _blanked(x: torch.Tensor) -> Callable[[slice], torch.Tensor]:
    """Rows ``word * L + i``: word ``word`` with character ``i`` set to the all-zero vector."""
    L = x.shape[1]

    def rows(sl: slice) -> torch.Tensor:
        word, i = row_index(sl, L, x.device)
        out = x[word].clone()
        out[torch.arange(len(word), device=x.device), i] = 0
        return out

    return rows


def text_occlusion(model: nn.Module, words: Words, target=None, mode: str = "delete", score: str = "logit",
                   batch_size: int | None = None) -> list[torch.Tensor]:
    """Drop of the score when one character is deleted (``"delete"``: "hyvää" -> "yvää", "hvää", ...)
    or blanked to the all-zero one-hot (``"blank"``, the length is kept). Positive: the character
    supported the target."""
    check_choice(mode, "mode", ("delete", "blank"))
    with _rnn_state(model, words, target, score, batch_size) as (words, tgt, bs):
        out: list = [None] * len(words)
        for rows, x, t in _groups(model, words, tgt):
            n, L, _ = x.shape
            full = perturbation_scores(model, x, n, t, bs)
            source = _deleted(x) if mode == "delete" else _blanked(x)
            occluded = perturbation_scores(model, source, n * L, t.repeat_interleave(L), bs).reshape(n, L)
            for j, a in zip(rows, full[:, None] - occluded):
                out[j] = a
    return out


def _lime_masks(L: int, samples: int, gen: torch.Generator) -> torch.Tensor:
    """lime's text sampling: the first row keeps every character, each other removes 1..L at random."""
    removed = torch.randint(1, L + 1, (samples - 1,), generator=gen)
    ranks = torch.rand(samples - 1, L, generator=gen).argsort(1).argsort(1)
    z = (ranks >= removed[:, None]).float()
    return torch.cat([torch.ones(1, L), z])


def _lime_word(model, x: torch.Tensor, t: Target, z: torch.Tensor, bs: int) -> torch.Tensor:
    """Scores of the masked words (characters with z = 0 deleted), run per kept count."""
    y = torch.empty(len(z), device=x.device)
    z = z.to(x.device)
    kept = z.sum(1).long()
    for k in kept.unique().tolist():
        rows = torch.nonzero(kept == k).flatten()
        pos = z[rows].argsort(dim=1, descending=True, stable=True)[:, :k].sort(1).values
        xs = x[0][pos]  # (m, k, A)
        y[rows] = perturbation_scores(model, xs, len(xs), t.repeat(len(xs)), bs)
    return y


def text_lime(model: nn.Module, words: Words, target=None, samples: int = 500, kernel_width: float = 0.25,
              score: str = "softmax", seed: int = 0, batch_size: int | None = None) -> list[torch.Tensor]:
    """LIME over characters (Ribeiro et al. 2016), as lime's ``LimeTextExplainer(char_level=True)``:
    samples delete random sets of characters, a weighted ridge on the keep/delete mask explains the
    target's probability (``score="softmax"``, lime's choice). Seeded; the global RNG is untouched."""
    check_positive_int(samples, "samples", 2)
    gen = generator(seed, "cpu")
    with _rnn_state(model, words, target, score, batch_size) as (words, tgt, bs):
        out: list = [None] * len(words)
        for j, w in enumerate(words):
            x = model.encode([w], next(model.parameters()).device)
            z = _lime_masks(len(w), samples, gen)
            y = _lime_word(model, x, tgt.select(torch.tensor([j])), z, bs)
            out[j] = fit_surrogate(z.to(y.device), y, kernel_width)[0]
    return out


for _name, _title, _fn, _aliases in (
        ("input_x_gradient", "Gradient x input", text_input_x_gradient, ()),
        ("ig", "Integrated Gradients", text_integrated_gradients, ("integrated_gradients",)),
        ("occlusion", "Occlusion", text_occlusion, ()),
        ("lime", "LIME", text_lime, ())):
    registry.register_method(registry.Method(_name, _title, _fn, seeded=_name == "lime", sanity="never", signed=True,
                                             modality="text"), _aliases)
TEXT_METHODS: dict[str, Callable] = {name: record.fn for name, record in registry.methods("text").items()}
"""The text methods by name (the registry's ``text`` modality; ``integrated_gradients`` is accepted for ``ig``)."""


def explain_text(model: nn.Module, words: Words, target=None, methods: Sequence[str] | None = None,
                 seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Every text method's attribution per character: ``{method: [ (len(word),) tensors ]}``.

    Example: ``pl.explain_text(pl.load_model("langid"), ["hyvää", "gezellig"])``.
    """
    records = [registry.method(name, "text") for name in (registry.methods("text") if methods is None else methods)]
    out = {}
    for record in records:
        out[record.name] = record(model, words, target, **({"seed": seed} if record.seeded else {}))
    return out
