"""Sequences: the built-in ``langid`` character GRU and its explanations.

``model`` (the GRU, its wordfreq data, training and cache), ``attribution`` (per-character maps on
the shared gradient, path-integral, perturbation and surrogate pieces), ``attack`` (HotFlip),
``render`` (coloured characters as PNG and HTML) and ``cli`` (the ``pellucid`` text commands).
"""

from .attack import TextAttack, hotflip
from .attribution import (
    TEXT_METHODS,
    check_text_model,
    check_words,
    explain_text,
    language_index,
    text_input_x_gradient,
    text_integrated_gradients,
    text_lime,
    text_occlusion,
)
from .model import (
    ALPHABET,
    CODES,
    LANGUAGES,
    CharGRU,
    by_length,
    cached_langid,
    langid_accuracy,
    langid_checkpoint,
    langid_words,
    load_langid,
    train_langid,
    word_logits,
    word_titles,
)

__all__ = [
    "ALPHABET", "CODES", "LANGUAGES", "TEXT_METHODS", "CharGRU", "TextAttack", "by_length", "cached_langid",
    "check_text_model", "check_words", "explain_text", "hotflip", "langid_accuracy", "langid_checkpoint",
    "langid_words", "language_index", "load_langid", "text_input_x_gradient", "text_integrated_gradients",
    "text_lime", "text_occlusion", "train_langid", "word_logits", "word_titles",
]
