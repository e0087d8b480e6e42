"""The second bad-input audit (issue #30): class numbers past int64, non-finite or out-of-range numeric
settings, unknown keyword arguments, the command's flags and the web page's bodies. Each bad value is a
PellucidError that names it and what is accepted; the CLI says it in one line with exit code 2 and the
web page with a 4xx, never a 500."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pellucid as pl
from pellucid import cli
from pellucid._checks import PellucidError


@pytest.fixture(scope="module")
def two(digits_batch):
    x, y = digits_batch
    return x[:2], y[:2]


# ---------------------------------------------------------------------------------------------
# 1. class numbers past int64: one check in the target layer, inherited by the API, CLI and web page

HUGE = [(2**64 + 5, "18446744073709551621"), (-(2**70), "-1180591620717411303424"),
        ([3, 2**63 + 11], "9223372036854775819"), (np.array([1, 2**63 + 1], dtype=np.uint64), "9223372036854775809"),
        (torch.tensor([4, 2**63 + 3], dtype=torch.uint64), "9223372036854775811")]


@pytest.mark.parametrize("target, shown", HUGE, ids=["int", "negative", "list", "numpy-uint64", "torch-uint64"])
def test_class_numbers_past_int64_name_the_value_and_the_range(digits_model, two, target, shown):
    x, _ = two
    for call in (lambda: pl.saliency(digits_model, x, target), lambda: pl.fooling_image(digits_model, x, target),
                 lambda: pl.attribution_map("ig", digits_model, x, target, steps=2)):
        with pytest.raises(PellucidError, match=rf"target {shown} is out of range: the model has classes 0\.\.9"):
            call()


def test_class_numbers_past_int64_without_a_class_count(two):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4))  # no num_classes to check against
    x, _ = two
    with pytest.raises(PellucidError, match=r"target 36893488147419103232 is out of range: .*fits int64"):
        pl.gradient(model, x, 2**65)
    with pytest.raises(PellucidError, match=r"label -36893488147419103232 is negative: .*fits int64"):
        pl.fgsm(model, x, -(2**65), 0.1)
    with pytest.raises(PellucidError, match=r"channel 18446744073709551621 is out of range: .*fits int64"):
        pl.channel_visualization(pl.load_model("digits"), "conv2", 2**64 + 5, steps=1)


@pytest.mark.parametrize("embedding", [object(), [None, None], "a vector", torch.tensor([1.0, float("inf")])])
def test_similarity_target_refuses_what_is_not_a_finite_vector(embedding):
    with pytest.raises(PellucidError, match="similarity_target: embedding"):
        pl.similarity_target(embedding)


def test_cli_class_number_past_int64_is_one_line(tmp_path, capsys, digits_model):
    assert cli.main(["saliency", "-n", "2", "--target", "123456789012345678901234", "--out",
                     str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "123456789012345678901234 is out of range" in err and "0..9" in err
    assert not (tmp_path / "s.png").exists()
