"""Train a torchvision resnet18 on the digits and save it as a user-supplied weights file.

    python docs/train_resnet18_digits.py [OUT.pth]     # default ~/.cache/pellucid/resnet18-digits.pth

No ImageNet weights can be downloaded here, so this makes the "user-supplied resnet18" of the README's
class-visualization comparison: the same architecture as ``pl.load_model("resnet18", weights="random")``,
trained (3 epochs, about 2 minutes on 2 CPU cores) on the 4,000 training digits, upsampled to 64x64 and
repeated over three channels. The file holds ``{"state_dict", "meta"}`` (labels, input size), which
``pl.load_model("resnet18", weights=OUT)`` reads with ``weights_only=True``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pellucid as pl  # noqa: E402
from pellucid.models.data import cache_dir, digits  # noqa: E402
from pellucid.models.digits import shift as _shift
from pellucid.models.vision import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

SIZE = 64


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """Digits (N, 1, 28, 28) in [0, 1] as (N, 3, SIZE, SIZE) images."""
    return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1)


def main(out: Path, epochs: int = 3, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> None:
    import torchvision

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=10)
    model = pl.wrap(net, mean=IMAGENET_MEAN, std=IMAGENET_STD, labels=[str(k) for k in range(10)],
                    input_size=(3, SIZE, SIZE))
    x, y = digits("train")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(as_rgb(_shift(x[idx], gen))), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: loss {float(loss.detach()):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    xt, yt = digits("test")
    with torch.no_grad():
        acc = float(torch.cat([model(as_rgb(xt[i:i + 250])).argmax(1) for i in range(0, len(xt), 250)])
                    .eq(yt).float().mean())
    meta = {"labels": [str(k) for k in range(10)], "input_size": [3, SIZE, SIZE], "accuracy": acc}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "meta": meta}, out)
    print(f"held-out accuracy {100 * acc:.1f}% on {len(xt)} digits; {time.perf_counter() - start:.0f} s; wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else cache_dir() / "resnet18-digits.pth")
