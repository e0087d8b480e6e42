"""What is the smallest change of letters that makes it say Dutch? A HotFlip-style character attack.

HotFlip (Ebrahimi et al. 2018): the gradient of the objective with respect to the one-hot input
ranks every single-letter substitution by its first-order gain ``g[i, new] - g[i, old]``; a beam
search keeps the best words after evaluating the top-ranked flips exactly. Searching one edit at a
time means the first successful depth is the number of edits reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import PellucidError, check_positive_int
from .._grad import iter_gradients, logits_of
from ..targets import Target
from .attribution import _rnn_state, language_index


@dataclass
class TextAttack:
    """The result of :func:`hotflip`: ``word`` is the edited word, ``edits`` its ``(position, old, new)``."""

    original: str
    word: str
    edits: list[tuple[int, str, str]]
    success: bool
    source: int
    label: int
    target: int | None
    probs: torch.Tensor

    @property
    def num_edits(self) -> int:
        return len(self.edits)

    def describe(self, labels) -> str:
        changes = ", ".join(f"{old}->{new} at {i}" for i, old, new in self.edits) or "none"
        verdict = "flipped" if self.success else "not flipped"
        return (f"{self.original} ({labels[self.source]}) -> {self.word} ({labels[self.label]} "
                f"{100 * float(self.probs[self.label]):.1f}%): {verdict} with {self.num_edits} edit(s): {changes}")


def _objective(source: int, target: int | None) -> Target:
    """Targeted: the target's log-probability; untargeted: minus the source's log-probability."""
    if target is not None:
        return Target(None, lambda lg: F.log_softmax(lg, 1)[:, target])
    return Target(None, lambda lg: -F.log_softmax(lg, 1)[:, source])


def _candidates(model, beam: list[str], original: str, obj: Target, allowed: torch.Tensor, per_word: int,
                bs: int) -> list[str]:
    """The ``per_word`` best single flips of each beam word by first-order gain, at positions not yet edited."""
    device = allowed.device
    x = model.encode(beam, device)
    grads = torch.cat([g for _, g, _ in iter_gradients(model, x, len(x), obj, bs)])
    gain = grads - (grads * x).sum(-1, keepdim=True)  # g[i, new] - g[i, current]
    gain = gain.masked_fill(~allowed | x.bool(), float("-inf"))
    orig = model.encode([original], device)[0]
    edited = (x * orig).sum(-1) == 0  # (B, L): positions that already differ from the original
    gain = gain.masked_fill(edited[..., None], float("-inf"))
    out = []
    for b, word in enumerate(beam):
        flat = gain[b].flatten()
        top = flat.topk(min(per_word, int(torch.isfinite(flat).sum()))).indices
        for k in top.tolist():
            i, c = divmod(k, x.shape[-1])
            out.append(word[:i] + model.alphabet[c] + word[i + 1 :])
    return list(dict.fromkeys(out))


def hotflip(model, word: str, target=None, max_edits: int = 3, beam: int = 5, candidates: int = 10,
            letters: str | None = None, batch_size: int | None = None) -> TextAttack:
    """Find few letter substitutions that change the predicted language (or make it ``target``).

    ``target``: ``None`` (any other language) or a language name/code/index. ``letters`` restricts
    the replacement letters (default: the whole alphabet; ``"ascii"``: a-z only). Example::

        res = pl.hotflip(pl.load_model("langid"), "hyvää", target="dutch")
        res.word, res.edits, res.success
    """
    if not isinstance(word, str):
        raise PellucidError(f"hotflip attacks one word (a string), got {type(word).__name__}")
    for v, name in ((max_edits, "max_edits"), (beam, "beam"), (candidates, "candidates")):
        check_positive_int(v, name)
    with _rnn_state(model, word, None, "logit", batch_size) as (words, tgt, bs):
        original, source = words[0], int(tgt.classes[0])
        goal = None if target is None else language_index(target, model)
        allowed = _allowed(model, letters)
        obj = _objective(source, goal)
        done = (lambda k: k != source) if goal is None else (lambda k: k == goal)  # noqa: E731
        best, best_logits = original, _logits(model, [original], bs)[0]
        beam_words = [original]
        for _ in range(max_edits):
            if done(int(best_logits.argmax())):
                break
            cands = _candidates(model, beam_words, original, obj, allowed, candidates, bs)
            if not cands:
                break
            logits = _logits(model, cands, bs)
            value = obj(logits)
            hit = torch.tensor([done(int(k)) for k in logits.argmax(1)], device=value.device)
            order = value.masked_fill(~hit, float("-inf")).argmax() if hit.any() else value.argmax()
            best, best_logits = cands[int(order)], logits[int(order)]
            beam_words = [cands[int(i)] for i in value.topk(min(beam, len(cands))).indices]
    label = int(best_logits.argmax())
    edits = [(i, a, b) for i, (a, b) in enumerate(zip(original, best)) if a != b]
    return TextAttack(original, best, edits, done(label), source, label, goal, best_logits.softmax(0).cpu())


def _logits(model, words: list[str], bs: int) -> torch.Tensor:
    x = model.encode(words, next(model.parameters()).device)
    return logits_of(model, x, len(x), bs)


def _allowed(model, letters: str | None) -> torch.Tensor:
    device = next(model.parameters()).device
    if letters is None:
        return torch.ones(len(model.alphabet), dtype=torch.bool, device=device)
    if letters == "ascii":
        letters = "abcdefghijklmnopqrstuvwxyz"
    if not isinstance(letters, str) or not letters:
        raise PellucidError(f"letters must be a non-empty string of replacement letters, got {letters!r}")
    bad = sorted(set(letters) - set(model.alphabet))
    if bad:
        raise PellucidError(f"letters {', '.join(map(repr, bad))} are not in the alphabet {model.alphabet}")
    return torch.tensor([c in letters for c in model.alphabet], device=device)
