"""What the web server costs on top of the library: saliency of 20 digits through `pellucid serve`
(one at a time, and 20 at once with 1 and 2 model replicas) against `pl.saliency` in this process.

Run: python benchmarks/serve_load.py [THREADS]   (about a minute; the server runs as its own process)
Both sides use THREADS torch threads (default 1: on a busy 2-core machine, 2 intra-op threads on
28x28 inputs are up to 40x slower than 1).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from _timing import median_time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pellucid as pl  # noqa: E402
from pellucid import web  # noqa: E402
from pellucid.io import to_uint8  # noqa: E402

N, RUNS = 20, 3
THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1


def png_bytes(img):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


def request(port, method, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body, headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    assert r.status == 200, (r.status, data[:200])
    return data


def explain(port, image):
    body = json.loads(request(port, "POST", "/api/explain", json.dumps({"image": image, "method": "saliency"}),
                              {"Content-Type": "application/json"}))
    return request(port, "GET", body["url"], None, {})


def median_seconds(fn):
    return median_time(fn, RUNS)


def direct(model, x):
    """The library alone: one saliency map and its overlay PNG per image, one after another."""
    for i in range(N):
        xi = x[i % len(x)][None]
        target = int(model(xi).argmax(1)[0])
        web.overlay_png(xi[0], pl.saliency(model, xi, target)[0])


def limit(model, x):
    """Raw passes: the 20 saliency maps as one batch, no PNG."""
    xs = x.repeat(N // len(x), 1, 1, 1)
    pl.saliency(model, xs, model(xs).argmax(1))


def through_server(replicas, x):
    proc = subprocess.Popen([sys.executable, "-m", "pellucid.cli", "serve", "--port", "0", "--replicas", str(replicas)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    try:
        port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
        images = [json.loads(request(port, "POST", "/api/image", png_bytes(x[i]),
                                     {"Content-Type": "application/octet-stream"}))["image"] for i in range(len(x))]
        ids = [images[i % len(images)] for i in range(N)]
        for image in ids:  # warm up
            explain(port, image)
        one_by_one = median_seconds(lambda: [explain(port, image) for image in ids])
        with ThreadPoolExecutor(N) as pool:
            at_once = median_seconds(lambda: list(pool.map(lambda image: explain(port, image), ids)))
        return one_by_one, at_once
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    torch.set_num_threads(THREADS)
    model = pl.load_model("digits")
    x, _ = pl.sample_images("digits", n=10)
    t_direct = median_seconds(lambda: direct(model, x))
    t_limit = median_seconds(lambda: limit(model, x))
    rows = [("pl.saliency + overlay PNG, in process", t_direct), ("limit: one batch of 20, no PNG", t_limit)]
    for replicas in (1, 2):
        one, many = through_server(replicas, x)
        rows += [(f"server, one request at a time (replicas={replicas})", one),
                 (f"server, 20 concurrent requests (replicas={replicas})", many)]
    print(f"saliency of {N} digits, median of {RUNS} runs, {torch.get_num_threads()} torch threads")
    print(f"{'':58s} {'seconds':>8s} {'ms/map':>8s} {'vs in-process':>14s}")
    for name, t in rows:
        print(f"{name:58s} {t:8.3f} {1000 * t / N:8.1f} {t / t_direct:13.2f}x")


if __name__ == "__main__":
    main()
