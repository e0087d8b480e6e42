"""Concepts on the real ImageNet model (EfficientNet-Lite0, layer ``_relu1``: 1280 x 7 x 7 = 62,720 dimensions).

1. Fitting one CAV on precomputed activations (crops of one photo against crops of the others): FastCAV
   (``kind="mean"``) against pellucid's linear SVM (``kind="svm"``, exact, in the dual) and against
   scikit-learn's ``SGDClassifier(alpha=0.01)``, Captum's default classifier, with the cosines between them.
2. TCAV with 20 runs, pellucid against Captum 0.9's ``TCAV`` on the same work: the same photos, target,
   layer, concept shares, random sets and random-vs-random pairs (Captum gets each set as a ``Concept``,
   as its users write them). Captum runs with its default classifier, and again with pellucid's SVM as its
   classifier (same fits on both sides: what remains is the pipeline: activations per set, files on disk).
3. Calibration on the digits: how often a random "concept" comes out significant at alpha = 0.05 over 100
   seeded trials, with pellucid's runs (each run its own concept images) and with Kim et al.'s reuse of the
   whole concept set in every run (as Captum's experimental sets do), against random-vs-random runs.

Times are medians over ``--rounds`` rounds (``_timing.interleaved_runs``: the order rotates, a pause before
each call), with per-round ratios (quartiles).

    python benchmarks/concepts.py [--threads 2] [--rounds 2] [--concept 40] [--random 40] [--skip-captum]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's pellucid, not an installed one

import torch  # noqa: E402
from _timing import interleaved_runs, report  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid.concept import significance, vectors  # noqa: E402
from pellucid.concept.crops import cut, random_boxes  # noqa: E402

LAYER = "_relu1"


def crops_of(photos, which, count, gen):
    return cut(photos, random_boxes(photos, torch.as_tensor(which).repeat(count)[:count], gen, (0.4, 0.8)))


def sgd_fit(pos, neg):
    from sklearn.linear_model import SGDClassifier

    rows = torch.cat([pos, neg]).double().numpy()
    svm = SGDClassifier(loss="hinge", alpha=0.01, max_iter=1000, tol=1e-3, random_state=0)
    return torch.as_tensor(svm.fit(rows, [1] * len(pos) + [0] * len(neg)).coef_[0], dtype=pos.dtype)


def fitting(model, concept, random, rounds):
    acts = vectors.flat_activations(model, torch.cat([concept, random]), LAYER, None)
    pos, neg = acts[: len(concept)], acts[len(concept):]
    fits = {"FastCAV (mean)": lambda: vectors.fit_direction(pos, neg, "mean"),
            "pellucid SVM (dual)": lambda: vectors.fit_direction(pos, neg, "svm"),
            "SGDClassifier (Captum's default)": lambda: sgd_fit(pos, neg)}
    times = interleaved_runs(fits, rounds=rounds, pause=0.2)
    report(f"fitting one CAV: {len(pos)} vs {len(neg)} rows of {acts.shape[1]} dims", times, "FastCAV (mean)")
    mean, svm = fits["FastCAV (mean)"]()[0], fits["pellucid SVM (dual)"]()[0]
    sgd = sgd_fit(pos, neg)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    print(f"cosine FastCAV-SVM {cos(mean, svm):.3f}, SVM-SGD {cos(svm, sgd):.3f}, FastCAV-SGD {cos(mean, sgd):.3f}")


def captum_sets(concept, random, runs, gen):
    """pellucid's draws (the same generator calls as significance.tcav_runs) as Captum concepts."""
    from captum.concept import Concept
    from torch.utils.data import DataLoader

    share = len(concept) // runs
    mine = torch.randperm(len(concept), generator=gen)[: runs * share].reshape(runs, share)
    draws = significance._Draws(len(random), gen)
    theirs = [draws.take(share) for _ in range(runs)]
    pairs = [draws.take(2 * share) for _ in range(runs)]
    make = lambda i, name, images: Concept(i, name, DataLoader(images, batch_size=8))  # noqa: E731
    sets = [[make(i, f"c{i}", concept[mine[i]]), make(runs + i, f"r{i}", random[theirs[i]])] for i in range(runs)]
    sets += [[make(2 * runs + 2 * i, f"a{i}", random[p[:share]]),
              make(2 * runs + 2 * i + 1, f"b{i}", random[p[share:]])] for i, p in enumerate(pairs)]
    return sets


def captum_tcav(model, x, target, concept, random, runs, classifier):
    from captum.concept import TCAV

    def run():
        folder = tempfile.mkdtemp()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tcav = TCAV(model, [f"net.{LAYER}"], classifier=classifier(), save_path=folder)
                sets = captum_sets(concept, random, runs, torch.Generator().manual_seed(0))
                return tcav.interpret(x, sets, target=target)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return run


def pellucid_svm():
    """Captum's ``Classifier`` around pellucid's SVM: the same fits on both sides."""
    from captum.concept._utils.classifier import Classifier

    class PellucidSVM(Classifier):
        def __init__(self):
            pass

        def train_and_eval(self, dataloader, **kwargs):
            rows, labels = (torch.cat(parts) for parts in zip(*dataloader))
            self.ids = labels.unique().tolist()
            self.w = vectors.fit_direction(rows[labels == self.ids[0]], rows[labels == self.ids[1]], "svm")[0]
            return {"accs": torch.tensor(1.0)}

        def weights(self):
            return torch.stack([self.w, -self.w])

        def classes(self):
            return self.ids

    return PellucidSVM()


def tcav_speed(model, photos, concept, random, rounds, runs=20):
    from captum.concept._utils.classifier import DefaultClassifier

    target = int(model(photos[:1]).argmax())
    ours = lambda kind: lambda: pl.tcav(model, photos, target, LAYER, concept, random_x=random,  # noqa: E731
                                        runs=runs, kind=kind, seed=0)
    contenders = {"pellucid svm": ours("svm"), "pellucid mean": ours("mean"),
                  "Captum (default SGDClassifier)": captum_tcav(model, photos, target, concept, random, runs,
                                                                DefaultClassifier),
                  "Captum (pellucid's SVM)": captum_tcav(model, photos, target, concept, random, runs, pellucid_svm)}
    times = interleaved_runs(contenders, rounds=rounds, warmup=False)  # the fits above warmed the model up
    report(f"TCAV, {runs} runs + {runs} random runs, {len(photos)} photos, {len(concept)} concept and "
           f"{len(random)} random images at {LAYER}", times, "pellucid svm")


def calibration(trials=100, runs=20, concept_size=40):
    """Share of random "concepts" significant at 0.05: pellucid's runs vs Kim et al.'s reuse of the whole set."""
    from pellucid.models.data import digits
    from pellucid.targets import as_target

    model = pl.load_model("digits")
    x, y = digits("all")
    threes, others = x[y == 3][:40], x[y != 3][:600]
    grads = vectors.layer_gradients(model, threes, as_target(3, 40, 10), "relu3", 40)
    pool = vectors.flat_activations(model, others, "relu3", None)
    hits = {"pellucid": 0, "Kim et al. (whole concept set in every run)": 0}
    share = concept_size // runs
    for trial in range(trials):
        gen = torch.Generator().manual_seed(trial)
        order = torch.randperm(len(pool), generator=gen)
        concept, random = pool[order[:concept_size]], pool[order[concept_size:]]
        scores, nulls, _ = significance.tcav_runs(grads, concept, random, runs, "mean", gen)
        hits["pellucid"] += significance.t_test(scores, nulls) < 0.05
        # Kim et al.: every run's CAV on the whole concept set against a new random set of its size; the
        # random-vs-random runs: one random set against new ones
        sets = [random[torch.randperm(len(random), generator=gen)[:concept_size]] for _ in range(2 * runs + 1)]
        v = torch.stack([vectors.fit_direction(concept, r, "mean")[0] for r in sets[:runs]])
        u = torch.stack([vectors.fit_direction(sets[-1], r, "mean")[0] for r in sets[runs:-1]])
        kim = [((grads @ w.T) > 0).float().mean(0) for w in (v, u)]
        hits["Kim et al. (whole concept set in every run)"] += significance.t_test(*kim) < 0.05
    print(f"\ncalibration: random concepts of {concept_size} digits, {runs} runs, significant at 0.05 in "
          f"{trials} trials (share {share} per run for pellucid)")
    for name, h in hits.items():
        print(f"| {name} | {h}/{trials} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concept", type=int, default=40)
    ap.add_argument("--random", type=int, default=40)
    ap.add_argument("--skip-captum", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = pl.load_model("imagenet")
    photos, _ = pl.sample_images("photos")
    gen = torch.Generator().manual_seed(0)
    concept = crops_of(photos, [0], args.concept, gen)
    random = crops_of(photos, list(range(1, len(photos))), args.random, gen)
    print(f"torch {torch.__version__}, {args.threads} threads, EfficientNet-Lite0, layer {LAYER}")
    fitting(model, concept[:24], random[:24], args.rounds * 3)
    if not args.skip_captum:
        tcav_speed(model, photos, concept, random, args.rounds)
    calibration()


if __name__ == "__main__":
    main()
