"""Sequences: the langid GRU, per-character attribution, the HotFlip attack, rendering and the CLI.

Oracles: a brute-force loop of single deletions (occlusion), IG completeness and Captum's
InputXGradient / IntegratedGradients on the one-hot input, lime's LimeTextExplainer (LIME), and the
model re-run on the attacked word (HotFlip).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import Boom, assert_unchanged, snapshot

import pellucid as pl
from pellucid._checks import PellucidError

pytest.importorskip("wordfreq")

from pellucid.text import model as text  # noqa: E402
from pellucid.text import word_logits  # noqa: E402

WORDS = ["hyvää", "gezellig", "niezbędny", "bicicleta", "weather", "kiitos", "mañana", "huis"]
REPORTED_ACCURACY = 0.88  # README: 88.8% measured; the floor tested here


@pytest.fixture(scope="module")
def langid():
    return pl.load_model("langid")


def score(model, word: str, k: int) -> float:
    with torch.no_grad():
        return float(model(model.encode([word]))[0, k])


def predicted(model, word: str) -> int:
    return int(word_logits(model, [word]).argmax())


# ---------------------------------------------------------------------------------------------
# model and data


def test_heldout_accuracy_is_at_least_the_reported_figure(langid):
    assert text.langid_accuracy(langid, "test") >= REPORTED_ACCURACY


def test_split_is_fixed_disjoint_and_every_word_has_one_label():
    train, ytr = text.langid_words("train")
    test, yte = text.langid_words("test")
    assert not set(train) & set(test)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert len(test) == int(0.1 * (len(train) + len(test)))
    assert text.langid_words("test")[0] == test
    assert torch.bincount(yte, minlength=5).min() > 0.15 * len(test)  # roughly balanced languages
    assert all(len(w) >= 2 and set(w) <= set(text.ALPHABET) for w in train[:2000])


def test_architecture_and_registry(langid):
    assert isinstance(langid.gru, torch.nn.GRU) and langid.gru.hidden_size == 128
    assert langid.fc.out_features == 5 and langid.labels == list(text.LANGUAGES)
    assert "langid" in dict(pl.list_models())
    assert not langid.training


def test_one_hot_forward_matches_index_forward_and_length_zero(langid):
    idx = langid.indices(["kiitos", "weathe"])
    with torch.no_grad():
        assert torch.allclose(langid(langid.encode(["kiitos", "weathe"])), langid.forward_indices(idx), atol=1e-5)
        empty = langid(torch.zeros(2, 0, len(text.ALPHABET)))
    assert torch.allclose(empty, langid.fc.bias.expand(2, -1))


def test_training_is_seeded_and_leaves_the_global_rng(monkeypatch):
    small = (["abc", "abd", "xyz", "xyw", "ąęł", "äöä"] * 20, torch.tensor([0, 0, 1, 1, 4, 2] * 20))
    monkeypatch.setattr(text, "langid_words", lambda split="train": small)
    state = torch.random.get_rng_state()
    a, _ = text.train_langid(epochs=1, progress=False, batch_size=16)
    b, _ = text.train_langid(epochs=1, progress=False, batch_size=16)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_corrupt_cache_retrains(tmp_path, monkeypatch):
    monkeypatch.setenv("PELLUCID_CACHE", str(tmp_path))
    (tmp_path / "langid.pt").write_bytes(b"not a checkpoint")
    calls = []

    def fake_train(progress=True):
        calls.append(1)
        return text.CharGRU(), 0.5

    monkeypatch.setattr(text, "train_langid", fake_train)
    assert text.load_langid().accuracy == 0.5
    assert text.load_langid().accuracy == 0.5 and calls == [1]  # cached, loaded with weights_only=True


def test_missing_wordfreq_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "wordfreq", None)
    monkeypatch.setenv("PELLUCID_CACHE", str(tmp_path))
    text._langid_table.cache_clear()
    try:
        with pytest.raises(PellucidError, match=r"pellucid\[text\]"):
            text.langid_words("train")
        with pytest.raises(PellucidError, match=r"pip install 'pellucid\[text\]'"):
            pl.load_model("langid")
    finally:
        text._langid_table.cache_clear()


# ---------------------------------------------------------------------------------------------
# attribution


def test_integrated_gradients_completeness_at_128_steps(langid):
    ig = pl.text_integrated_gradients(langid, WORDS, steps=128)
    for word, a in zip(WORDS, ig):
        k = predicted(langid, word)
        with torch.no_grad():
            x = langid.encode([word])
            delta = float(langid(x)[0, k] - langid(torch.zeros_like(x))[0, k])
        assert abs(float(a.sum()) - delta) <= 0.01 * abs(delta), word


def test_gradient_methods_match_captum(langid):
    from captum.attr import InputXGradient, IntegratedGradients

    for word in WORDS[:4]:
        x, k = langid.encode([word]), predicted(langid, word)
        ref = InputXGradient(langid).attribute(x, target=k).sum(-1)[0]
        assert torch.allclose(pl.text_input_x_gradient(langid, word)[0], ref, atol=1e-5)
        ref = IntegratedGradients(langid).attribute(x, target=k, n_steps=64, method="gausslegendre").sum(-1)[0]
        assert torch.allclose(pl.text_integrated_gradients(langid, word, steps=64)[0], ref, atol=1e-4)
    langid.eval()


def test_occlusion_equals_brute_force_deletions(langid):
    words = WORDS + ["a"]
    occ = pl.text_occlusion(langid, words, target="dutch")
    blank = pl.text_occlusion(langid, words, target=3, mode="blank")
    for word, d, b in zip(words, occ, blank):
        full = score(langid, word, 3)
        expected = [full - score(langid, word[:i] + word[i + 1 :], 3) for i in range(len(word))]
        assert torch.allclose(d, torch.tensor(expected), atol=1e-5), word
        for i in range(len(word)):
            x = langid.encode([word])
            x[0, i] = 0
            with torch.no_grad():
                assert abs(float(b[i]) - (full - float(langid(x)[0, 3]))) < 1e-5


def test_blank_occlusion_equals_captum_feature_ablation(langid):
    from captum.attr import FeatureAblation

    word = "niezbędny"
    x, k = langid.encode([word]), predicted(langid, word)
    mask = torch.arange(len(word))[None, :, None].expand_as(x)
    ref = FeatureAblation(langid).attribute(x, target=k, feature_mask=mask)[0, :, 0]
    assert torch.allclose(pl.text_occlusion(langid, word, mode="blank")[0], ref, atol=1e-5)


def test_lime_agrees_with_lime_text_explainer(langid):
    from lime.lime_text import LimeTextExplainer

    def classify(strings):
        return word_logits(langid, [s.replace(chr(0), "") for s in strings]).softmax(1).numpy()

    for word in ["gezellig", "weather"]:
        k = predicted(langid, word)
        explainer = LimeTextExplainer(char_level=True, bow=False, mask_string=chr(0), random_state=0,
                                      feature_selection="none")
        exp = explainer.explain_instance(word, classify, labels=(k,), num_features=len(word), num_samples=2000)
        ref = np.zeros(len(word))
        for i, v in exp.as_map()[k]:
            ref[i] = v
        ours = pl.text_lime(langid, word, samples=2000)[0].numpy()
        assert np.corrcoef(ref, ours)[0, 1] > 0.95 and np.abs(ref - ours).max() < 0.06


def test_lime_is_seeded_and_leaves_the_global_rng(langid):
    state = torch.random.get_rng_state()
    a = pl.text_lime(langid, ["kiitos", "huis"], seed=3, samples=200)
    b = pl.text_lime(langid, ["kiitos", "huis"], seed=3, samples=200)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert torch.equal(state, torch.random.get_rng_state())


def test_mixed_lengths_and_targets_per_word(langid):
    maps = pl.explain_text(langid, ["Hyvää", "huis", "mañana"], target=["finnish", "nl", 1])
    assert set(maps) == {"input_x_gradient", "ig", "occlusion", "lime"}
    for values in maps.values():
        assert [len(v) for v in values] == [5, 4, 6]


def test_a_suffix_matters_for_finnish(langid):
    """On 'hyvää' the two final ä carry most of the Finnish evidence in every method."""
    for name, values in pl.explain_text(langid, "hyvää", target="finnish").items():
        a = values[0]
        assert a[3:].sum() > a[:3].abs().sum(), name


# ---------------------------------------------------------------------------------------------
# attack


@pytest.mark.parametrize("word,target,letters", [("weather", None, None), ("hyvää", "spanish", "ascii"),
                                                 ("gezellig", "polish", None), ("kiitos", None, "ascii")])
def test_hotflip_really_flips_with_the_reported_edits(langid, word, target, letters):
    res = pl.hotflip(langid, word, target=target, letters=letters, max_edits=4)
    assert res.success
    label = predicted(langid, res.word)
    assert label == res.label and label != res.source
    if target is not None:
        assert label == text.LANGUAGES.index(target)
    diff = [(i, a, b) for i, (a, b) in enumerate(zip(word, res.word)) if a != b]
    assert diff == res.edits and res.num_edits == len(diff) >= 1 and len(res.word) == len(word)
    if letters == "ascii":
        assert all("a" <= b <= "z" for _, _, b in res.edits)


def substitutions(word: str, n: int, letters: str) -> list[str]:
    """Every word that differs from ``word`` in exactly ``n`` positions, with replacements from ``letters``."""
    out = []
    for pos in itertools.combinations(range(len(word)), n):
        for subs in itertools.product(*[[c for c in letters if c != word[i]] for i in pos]):
            chars = list(word)
            for i, c in zip(pos, subs):
                chars[i] = c
            out.append("".join(chars))
    return out


@pytest.mark.parametrize("word,target", [("niezbędny", None), ("weather", "polish"), ("hyvää", "dutch"),
                                         ("zwierzę", "spanish")])
def test_hotflip_is_minimal_by_brute_force(langid, word, target):
    """HotFlip reports 2 or 3 edits here; every word with fewer a-z substitutions, tried by brute force,
    misses the goal. So no reported edit is superfluous (reverting one gives such a word) and no
    smaller attack exists. (HotFlip is a beam search, not an exhaustive one: on other words, e.g.
    'huis' -> spanish, it reports 2 edits where 1 exists; these cases pin down what it finds today.)"""
    res = pl.hotflip(langid, word, target=target, letters="ascii", max_edits=4)
    assert res.success and res.num_edits >= 2
    goal = None if target is None else text.LANGUAGES.index(target)
    assert predicted(langid, res.word) == res.label == (res.label if goal is None else goal) != res.source
    for n in range(1, res.num_edits):
        pred = word_logits(langid, substitutions(word, n, "abcdefghijklmnopqrstuvwxyz")).argmax(1)
        reached = pred != res.source if goal is None else pred == goal
        assert not reached.any(), f"{int(reached.sum())} words with {n} edit(s) already reach the goal"


# ---------------------------------------------------------------------------------------------
# side effects and errors

CALLS = {
    "input_x_gradient": lambda m: pl.text_input_x_gradient(m, ["hyvää", "huis"]),
    "integrated_gradients": lambda m: pl.text_integrated_gradients(m, ["hyvää", "huis"], steps=8),
    "occlusion": lambda m: pl.text_occlusion(m, ["hyvää", "huis"], target=0),
    "lime": lambda m: pl.text_lime(m, ["hyvää"], samples=20),
    "hotflip": lambda m: pl.hotflip(m, "huis"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_side_effects_on_the_gru(langid, name):
    """Train mode, requires_grad, grads and hooks are as before, also when a forward raises."""
    dummy = torch.zeros(1)
    langid.train()
    try:
        before = snapshot(langid, dummy)
        CALLS[name](langid)
        assert_unchanged(langid, dummy, before)

        def explode(*_):
            raise Boom("forward failed mid-way")

        before = snapshot(langid, dummy)
        handle = langid.gru.register_forward_hook(explode)
        try:
            with pytest.raises(Boom):
                CALLS[name](langid)
        finally:
            handle.remove()
        assert_unchanged(langid, dummy, before)
    finally:
        langid.eval()


@pytest.mark.parametrize("words,match", [
    ("", "empty"), (["huis", "  "], "word 1 is empty"), ("hello!", r"'!'"), ("x1y2", r"'1', '2'"),
    ([], "no words"), ([3], "must be a string"), (5, "string or a sequence"),
])
def test_bad_words_are_named(langid, words, match):
    with pytest.raises(PellucidError, match=match):
        pl.text_occlusion(langid, words)


def test_unknown_language_lists_the_valid_ones(langid):
    with pytest.raises(PellucidError, match="unknown language 'klingon'.*english, spanish, finnish, dutch, polish"):
        pl.text_input_x_gradient(langid, "huis", target="klingon")
    with pytest.raises(PellucidError, match="unknown language"):
        pl.hotflip(langid, "huis", target="swedish")
    with pytest.raises(PellucidError, match="out of range"):
        pl.text_occlusion(langid, "huis", target=7)
    with pytest.raises(PellucidError, match="not in the alphabet"):
        pl.hotflip(langid, "huis", letters="ab7")
    with pytest.raises(PellucidError, match="text model"):
        pl.text_lime(torch.nn.Linear(2, 2), "huis")
    with pytest.raises(PellucidError, match="unknown method"):
        pl.explain_text(langid, "huis", methods=["gradcam"])


# ---------------------------------------------------------------------------------------------
# rendering, CLI, report


def test_render_png_and_html(langid):
    import io

    from PIL import Image

    from pellucid.text import render

    words = ["hyvää", "huis"]
    maps = pl.explain_text(langid, words, methods=["occlusion", "lime"])
    png = render.text_png(words, maps)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 300
    page = render.text_html(words, maps)
    assert page.count("<span") == 2 * 9 and page.count('title="') == 2 * 9


def test_cli_explain_and_attack(tmp_path, capsys, langid):
    from pellucid.cli import main

    out = tmp_path / "t.png"
    assert main(["explain-text", "hyvää", "Huis", "--methods", "occlusion,lime", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hyvää: finnish" in printed and "occlusion" in printed
    assert out.stat().st_size > 1000 and "<span" in (tmp_path / "t.html").read_text(encoding="utf-8")
    assert main(["attack-text", "weather", "--target", "dutch", "--letters", "ascii"]) == 0
    assert "flipped with" in capsys.readouterr().out
    assert main(["attack-text", "weather", "--target", "klingon"]) == 2
    assert main(["explain-text", "x!y"]) == 2
    assert "'!'" in capsys.readouterr().err
    assert main(["report", "--model", "langid", "--out", str(tmp_path / "r")]) == 2
    assert "explain-text" in capsys.readouterr().err


def test_cli_train_langid(tmp_path, monkeypatch, capsys):
    from pellucid.cli import main

    monkeypatch.setenv("PELLUCID_CACHE", str(tmp_path))
    monkeypatch.setattr(text, "train_langid", lambda epochs, seed: (text.CharGRU(), 0.25))
    assert main(["train", "langid", "--epochs", "2"]) == 0
    assert "held-out accuracy 25.00%" in capsys.readouterr().out
    assert (tmp_path / "langid.pt").exists()


def test_report_section(langid, digits_model, digits_batch, tmp_path):
    from pellucid.drawing.report import build_report, langid_section

    x, y = digits_batch
    path = build_report(digits_model, x[:2], y[:2], tmp_path, sections=[langid_section], progress=False)
    page = path.read_text(encoding="utf-8")
    assert "Sequences" in page and "<span" in page and "finnish" in page
