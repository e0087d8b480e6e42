"""Sequences: the built-in ``langid`` character GRU and its explanations.

The GRU itself, its wordfreq data, training and cache live with the other models
(:mod:`pellucid.models.langid`, re-exported here); ``attribution`` (per-character maps on the shared
gradient, path-integral, perturbation and surrogate pieces, registered as the ``text`` methods), ``attack`` (HotFlip),
``render`` (coloured characters as PNG and HTML) and ``cli`` (the ``pellucid`` text commands).
"""

from ..models.langid import (
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

__all__ = [
    "ALPHABET", "CODES", "LANGUAGES", "TEXT_METHODS", "CharGRU", "TextAttack", "by_length", "cached_langid",
    "check_text_model", "check_words", "explain_text", "hotflip", "langid_accuracy", "langid_checkpoint",
    "langid_words", "language_index", "load_langid", "text_input_x_gradient", "text_integrated_gradients",
    "text_lime", "text_occlusion", "train_langid", "word_logits", "word_titles",
]
