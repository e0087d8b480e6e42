"""The second bad-input audit, model and sample side: each defect with other values than the report's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pellucid as pl


@pytest.mark.parametrize("name, n, limit", [("digits", 1000 + 37, 1000), ("photos", 12, 8)])
def test_more_samples_than_there_are_is_refused_at_once(name, n, limit):
    with pytest.raises(pl.PellucidError, match=f"n={n} is more than the {limit} "):
        pl.sample_images(name, n=n)
    x, _ = pl.sample_images("digits", n=1000)  # the largest n is served, every digit once
    assert len(x) == 1000 and len(torch.unique(x.flatten(1), dim=0)) == 1000


@pytest.mark.parametrize("size", [0, -3, 2.5, True, 10**6])
def test_a_photo_size_out_of_range_is_refused(size):
    with pytest.raises(pl.PellucidError, match=f"size must be an int from 8 to 4096.*{size!r}"):
        pl.sample_images("photos", n=1, size=size)
    assert pl.sample_images("photos", n=1, size=32)[0].shape == (1, 3, 32, 32)


def test_samples_by_model_name_follow_its_record():
    assert pl.sample_images("digits-nobn", n=2)[0].shape == (2, 1, 28, 28)
    with pytest.raises(pl.PellucidError, match="langid reads words"):
        pl.sample_images("langid")


@pytest.fixture
def files(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(torch.ones(3, 4), bare)
    listy = tmp_path / "list.pt"
    torch.save([torch.ones(2)], listy)
    mixed = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "step": 7}, mixed)
    other = tmp_path / "r18.pt"
    torch.save(pl.load_model("resnet18", weights="random").net.state_dict(), other)
    return {"bare": bare, "list": listy, "mixed": mixed, "other": other, "dir": tmp_path}


KINDS = [("bare", "hold a Tensor, not a state_dict of"), ("list", "hold a list, not a state_dict of"),
         ("mixed", "not all tensors"), ("other", "do not fit"), ("dir", "is a folder")]


@pytest.mark.parametrize("model, kind, message", [(m, k, msg) for m in ("imagenet", "digits", "langid", "squeezenet1_1")
                                                  for k, msg in KINDS])
def test_every_weights_failure_names_the_file_and_the_model(files, model, kind, message):
    with pytest.raises(pl.PellucidError, match=message) as err:
        pl.load_model(model, weights=files[kind])
    assert str(files[kind].name if kind != "dir" else files[kind]) in str(err.value) and model.split("_")[0] in str(
        err.value)


@pytest.mark.parametrize("weights", [456, 1.5, ["a.pth"], b"r18.pth", True])
def test_weights_that_are_not_a_path_are_refused(weights):
    with pytest.raises(pl.PellucidError, match="must be a file path"):
        pl.load_model("resnet18", weights=weights)


def test_cli_weights_failure_is_one_line(files, capsys):
    from pellucid.cli import main

    assert main(["saliency", "--model", "digits", "--weights", str(files["bare"]), "-n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a state_dict" in err[0]


def test_wrap_gives_labels_to_a_wrapped_model_without_changing_it():
    model = pl.load_model("digits")
    names = [f"class {i}" for i in range(10)]
    relabelled = pl.wrap(model, labels=names)
    assert relabelled.labels == names and model.labels == [str(i) for i in range(10)]
    x, _ = pl.sample_images("digits", n=2)
    with torch.no_grad():
        assert torch.equal(relabelled(x), model(x))
    assert pl.wrap(model) is model
    with pytest.raises(pl.PellucidError, match="already a pellucid PixelModel"):
        pl.wrap(model, mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize("mean, std, message", [
    ((0.5,), (float("nan"),), "std must be finite"), ((float("inf"),), (0.2,), "mean must be finite"),
    ((0.5,), (-0.25,), "std must be positive"), ((0.5,), (0.0,), "std must be positive"),
])
def test_wrap_refuses_non_finite_or_non_positive_normalization(mean, std, message):
    with pytest.raises(pl.PellucidError, match=message):
        pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), mean=mean, std=std)


def test_a_model_on_the_meta_device_is_refused_before_any_work():
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    model = pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to("meta"))
    x = torch.rand(2, 1, 28, 28)
    for fn in (lambda: pl.saliency(model, x, 1), lambda: pl.fgsm(model, x, torch.tensor([1, 2]), 0.1)):
        with pytest.raises(pl.PellucidError, match="meta device"):
            fn()
    del net


def test_a_vit_refuses_another_image_size_clearly():
    vit = pl.load_model("vit_b_16", weights="random")
    with pytest.raises(pl.PellucidError, match="takes exactly 224x224"):
        pl.saliency(vit, torch.rand(1, 3, 192, 192), 0)
