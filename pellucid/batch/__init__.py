"""Explain a whole data set: a streaming, resumable batch job, on one machine or on Ray Data.

Every image gets one ``.npy`` map per method, a small PNG overlay and one row in a SQLite table
(prediction, confidence, deletion/insertion AUC per method, minimal epsilon, time). The table is
the manifest: a batch's files are renamed into place first, then its rows are committed in one
transaction, so a job killed at any moment (``kill -9`` included) resumes where it stopped and
never redoes a committed image. Example::

    res = pl.explain_dataset("digits-test", "out", methods=("saliency", "ig"))
    rows = pl.read_results("out")          # one dict per image

- ``job``: what to compute (the configuration and its hash), methods from :mod:`pellucid.registry`;
- the images, their loading and their aligned chunks come from :mod:`pellucid.dataset` (``sources``), and the
  job runs as a data-set stage there (``stage``: locally or on a Ray Data actor pool);
- ``compute``: one batch: predictions, maps, faithfulness, minimal epsilon, rows;
- ``store``: the out folder: lock, ``job.json``, map and overlay files, the SQLite table;
- ``runners``: :func:`explain_dataset`: the stage's worker and the driver that commits the rows;
- ``summary``: the report's batch summary.
"""

from .runners import BatchResult, explain_dataset
from .store import read_results

__all__ = ["BatchResult", "explain_dataset", "read_results"]
