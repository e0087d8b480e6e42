"""Sequences: the built-in ``langid`` character GRU, trained offline on wordfreq's word lists.

A word is a string; the model reads it as a one-hot tensor ``(N, L, A)`` (``A = len(ALPHABET)``)
through a bias-free linear embedding, so the gradient with respect to each character exists and the
attribution methods of :mod:`pellucid.text.attribution` reuse the image core unchanged.
All words of one model call have the same length ``L``; mixed lengths are run per length group.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._checks import PellucidError
from .._grad import logits_of
from .._state import model_state
from ..registry import Model, register_model
from .base import seeded
from .data import cache_dir
from .training import read_cached, save_checkpoint, train_loop
from .weights import load_into, read_state_dict

LANGUAGES = ("english", "spanish", "finnish", "dutch", "polish")
CODES = ("en", "es", "fi", "nl", "pl")
# a-z, then Spanish, Finnish, Dutch and Polish letters; words with any other character are left out
ALPHABET = "abcdefghijklmnopqrstuvwxyz" + "áéíóúüñ" + "äöå" + "ëïè" + "ąćęłńśźż"
WORDS_PER_LANGUAGE = 20_000
TEST_FRACTION = 0.1
HIDDEN, EMBED = 128, 48


def _wordfreq():
    try:
        import wordfreq
    except ImportError as e:
        raise PellucidError("the langid model is trained on wordfreq's word lists, which are not installed: "
                            "pip install 'pellucid[text]' (or pip install wordfreq)") from e
    return wordfreq


class CharGRU(nn.Module):
    """Character-level GRU classifier: one-hot ``(N, L, A)`` -> linear embedding -> GRU -> last
    hidden state -> linear over the languages. ``L = 0`` gives the initial state's logits."""

    def __init__(self, alphabet: str = ALPHABET, labels: Sequence[str] = LANGUAGES, hidden: int = HIDDEN,
                 embed: int = EMBED, codes: Sequence[str] = CODES):
        super().__init__()
        self.embed = nn.Linear(len(alphabet), embed, bias=False)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, len(labels))
        self.alphabet, self.labels, self.codes = alphabet, list(labels), list(codes)
        self.name, self.samples = "langid", "words"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def label(self, k: int) -> str:
        return self.labels[k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != len(self.alphabet):
            raise PellucidError(f"langid takes one-hot words of shape (N, L, {len(self.alphabet)}), got "
                                f"{tuple(x.shape)}; encode strings with model.encode(words)")
        return self._head(self.embed(x))

    def forward_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """The same function on character indices ``(N, L)`` (an embedding lookup; used for training)."""
        return self._head(self.embed.weight.T[idx])

    def _head(self, e: torch.Tensor) -> torch.Tensor:
        if e.shape[1] == 0:
            return self.fc(e.new_zeros(e.shape[0], self.gru.hidden_size))
        _, h = self.gru(e)
        return self.fc(h[-1])

    def indices(self, words: Sequence[str]) -> torch.Tensor:
        """Character indices ``(N, L)`` of words of one length (already checked)."""
        pos = {c: i for i, c in enumerate(self.alphabet)}
        return torch.tensor([[pos[c] for c in w] for w in words], dtype=torch.long).reshape(len(words), -1)

    def encode(self, words: Sequence[str] | str, device=None) -> torch.Tensor:
        """One-hot ``(N, L, A)`` float tensor of words that all have the same length."""
        words = [words] if isinstance(words, str) else list(words)
        if len({len(w) for w in words}) > 1:
            raise PellucidError("encode needs words of one length; group them by len() first")
        idx = self.indices(words).to(device)
        return nn.functional.one_hot(idx, len(self.alphabet)).float()


# ---------------------------------------------------------------------------------------------
# data: wordfreq's top words per language, shared words kept in their most frequent language


@lru_cache(maxsize=1)
def _langid_table() -> tuple[tuple[str, ...], np.ndarray]:
    wf = _wordfreq()
    best: dict[str, tuple[float, int]] = {}
    for k, code in enumerate(CODES):
        freqs = wf.get_frequency_dict(code)
        top = sorted(((f, w) for w, f in freqs.items() if len(w) >= 2 and all(c in ALPHABET for c in w)),
                     key=lambda t: (-t[0], t[1]))[:WORDS_PER_LANGUAGE]
        for f, w in top:
            if w not in best or f > best[w][0]:
                best[w] = (f, k)
    words = tuple(sorted(best))
    labels = np.array([best[w][1] for w in words], dtype=np.int64)
    return words, labels


def langid_words(split: str = "train") -> tuple[list[str], torch.Tensor]:
    """Words and language indices: ``"train"``, ``"test"`` (a fixed held-out 10%) or ``"all"``.

    Each language contributes its 20,000 most frequent words of 2+ letters of :data:`ALPHABET`
    (wordfreq's lists, offline). A word in several lists is kept once, under the language where it
    is most frequent, so no word is in both splits and no word has two labels.
    """
    if split not in ("train", "test", "all"):
        raise PellucidError(f"unknown split {split!r}; choose train, test or all")
    words, labels = _langid_table()
    order = np.random.default_rng(0).permutation(len(words))
    n_test = int(len(words) * TEST_FRACTION)
    order = {"train": order[n_test:], "test": order[:n_test], "all": order}[split]
    return [words[i] for i in order], torch.from_numpy(labels[order].copy())


def by_length(words: Sequence[str]) -> dict[int, list[int]]:
    """Positions of the words grouped by length (every model call takes words of one length)."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(words):
        groups.setdefault(len(w), []).append(i)
    return groups


def word_logits(model: nn.Module, words: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Logits ``(N, K)`` of checked words of any lengths, run per length group in eval mode."""
    device = next(model.parameters()).device
    out = torch.empty(len(words), model.num_classes, device=device)
    with model_state(model):
        for _, rows in by_length(words).items():
            x = model.encode([words[i] for i in rows], device)
            out[rows] = logits_of(model, x, len(x), batch_size)
    return out


def word_titles(model, words) -> list[str]:
    """'hyvää\\nfinnish 97.1%' per word."""
    probs = word_logits(model, words).softmax(1).cpu()
    p, k = probs.max(1)
    return [f"{w}\n{model.label(int(c))} {100 * float(q):.1f}%" for w, q, c in zip(words, p, k)]


def langid_accuracy(model: nn.Module, split: str = "test") -> float:
    words, y = langid_words(split)
    return float((word_logits(model, words).argmax(1).cpu() == y).float().mean())


# ---------------------------------------------------------------------------------------------
# training and the cache


def _batches(idx: list[torch.Tensor], y: torch.Tensor, batch_size: int,
             gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches, each of words of one length."""
    batches = []
    for _, rows in sorted(by_length(idx).items()):
        rows = torch.tensor(rows)[torch.randperm(len(rows), generator=gen)]
        for i in range(0, len(rows), batch_size):
            r = rows[i : i + batch_size]
            batches.append((torch.stack([idx[j] for j in r]), y[r]))
    return iter([batches[i] for i in torch.randperm(len(batches), generator=gen)])


def train_langid(epochs: int = 4, seed: int = 0, progress: bool = True, batch_size: int = 512,
                 lr: float = 1e-2) -> tuple[CharGRU, float]:
    """Train the langid GRU on the training words; return it and its held-out accuracy.

    Seeded (a private generator; the global RNG is untouched): the same arguments give the same weights.
    Runs on one CPU thread: these small GRU steps are latency-bound, and on a shared 2-core machine one
    thread was 9x faster than two (the thread count is restored afterwards).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        words, y = langid_words("train")
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CharGRU()
        idx = [model.indices([w])[0] for w in words]
        per_epoch = sum((len(r) + batch_size - 1) // batch_size for r in by_length(words).values())
        train_loop(model, lambda: _batches(idx, y, batch_size, gen), epochs, per_epoch, lr, "training langid",
                   progress, forward=model.forward_indices, clip=1.0)
        return model, langid_accuracy(model)
    finally:
        torch.set_num_threads(threads)


def langid_checkpoint() -> Path:
    return cache_dir() / "langid.pt"


def cached_langid() -> CharGRU | None:
    """The cached model, or ``None`` when it is missing or unreadable (never trains)."""
    cached = read_cached(langid_checkpoint(), CharGRU, "langid")
    if cached is None:
        return None
    model, meta = cached
    model.accuracy = meta.get("accuracy")
    return model.eval()


def load_langid(retrain: bool = False, progress: bool = True) -> CharGRU:
    """The trained langid model from the cache; trains (seeded) and caches it if missing or corrupt.

    A cached model loads without wordfreq; training needs it (``pip install 'pellucid[text]'``).
    """
    model = None if retrain else cached_langid()
    if model is not None:
        return model
    start = time.perf_counter()
    model, acc = train_langid(progress=progress)
    seconds = time.perf_counter() - start
    save_checkpoint(model, langid_checkpoint(), accuracy=acc, seconds=seconds)
    print(f"pellucid: trained langid in {seconds:.0f}s, held-out accuracy {100 * acc:.2f}%", file=sys.stderr)
    model.accuracy = acc
    return model


def _load(weights=None) -> CharGRU:
    if weights == "random":
        return seeded(CharGRU).eval()
    if weights is None:
        return load_langid()
    model = CharGRU()
    load_into(model, read_state_dict(weights, "langid"), "langid", weights)
    return model.eval()


register_model(Model("langid", "character GRU (hidden 128): English/Spanish/Finnish/Dutch/Polish words (needs "
                               "pellucid[text])", _load, None, samples="words", kind="text",
                     labels=lambda: list(LANGUAGES), extra="text", needs="wordfreq", trains=True))
