"""The data-set stage: many images, one function over them in aligned chunks (locally or on Ray), then a
step over all of the results. ``sources`` lists and loads a data set's images (a folder or a built-in
set); ``stage`` runs a pass; ``maps`` computes downsized maps for many images on it. The batch job
(:mod:`pellucid.batch`) is built on it, and so are the analyses that look across a data set: ``spray``
(``scan``: a model's strategies per class, SpRAy) and ``modeldiff`` (``diff``: what moved between two models)."""

from .maps import streamed_maps
from .modeldiff import ClassDiff, DiffResult, diff
from .sources import DATASETS, ChunkLoader, Item, chunk_positions, chunks_of, failed_row, list_items, load_item
from .spray import ClassScan, ScanResult, Strategy, scan
from .stage import Done, Stage, run_stage

__all__ = ["DATASETS", "ChunkLoader", "ClassDiff", "ClassScan", "DiffResult", "Done", "Item", "ScanResult", "Stage",
           "Strategy", "chunk_positions", "chunks_of", "diff", "failed_row", "list_items", "load_item", "run_stage",
           "scan", "streamed_maps"]
