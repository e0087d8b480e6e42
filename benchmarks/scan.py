"""``pl.scan`` cost: the clustering against the maps it clusters, and memory on photos.

1. The 4,000 training digits on ``digits``: the LRP maps alone (streamed, downsized) against the whole scan
   (maps + SpRAy per class); the issue's bound is a scan at most 2x the maps alone.
2. ``--photos N`` photos at 224² on ``imagenet`` (the sample photos, flipped and shifted to make N), in a process
   of their own: the resident memory once the photos are built, and its peak during the scan (the maps are
   downsized chunk by chunk, so the scan's own share should not grow with N).

Run: ``python benchmarks/scan.py [--rounds 3] [--photos 1000]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

import pellucid as pl
from pellucid.dataset.maps import streamed_maps
from pellucid.models.data import digits


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def photos_run(n: int) -> None:
    """The scan of ``n`` photos, alone in this process."""
    torch.set_num_threads(2)
    imagenet = pl.load_model("imagenet")
    photos, _ = pl.sample_images("photos")
    reps = [photos, photos.flip(-1), photos.roll(16, -1), photos.roll(-16, -2)]
    big = torch.empty(n, *photos.shape[1:])
    for i in range(n):
        big[i] = reps[i // len(photos) % len(reps)][i % len(photos)]
    held = resident_mb()
    t = time.perf_counter()
    result = pl.scan(imagenet, big, size=32)
    print(f"imagenet, {n} photos at 224²: scan {time.perf_counter() - t:.1f} s; resident memory {held:.0f} MB with the "
          f"photos ({n * 3 * 224 * 224 * 4 / 2**20:.0f} MB of them) before the scan, "
          f"peak {peak_mb():.0f} MB during it; "
          f"full-size maps would hold {n * 224 * 224 * 4 / 2**20:.0f} MB; {len(result.classes)} classes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--photos-alone", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.photos_alone:
        return photos_run(args.photos_alone)
    torch.set_num_threads(2)
    model = pl.load_model("digits")
    x, y = digits("train")
    maps_t, scan_t = [], []
    for _ in range(args.rounds):  # interleaved: maps alone, then the whole scan
        t = time.perf_counter()
        streamed_maps(model, x, y, "lrp")
        maps_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = pl.scan(model, x, y)
        scan_t.append(time.perf_counter() - t)
    ratios = [s / m for s, m in zip(scan_t, maps_t)]
    print(f"digits, 4,000 training images, LRP: maps alone median {statistics.median(maps_t):.2f} s "
          f"(min {min(maps_t):.2f}, max {max(maps_t):.2f}); whole scan {statistics.median(scan_t):.2f} s "
          f"(min {min(scan_t):.2f}, max {max(scan_t):.2f}); scan / maps {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}); strategies per class "
          f"{[c.clusters for c in result.classes.values()]}")
    if args.photos:
        import subprocess
        import sys

        subprocess.run([sys.executable, __file__, "--photos-alone", str(args.photos)], check=True)

if __name__ == "__main__":
    main()
