"""Old module paths. Modules that moved keep working under their old name (the same module object);
modules renamed because a function of the same name hid them fail with a message naming the new path."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {  # old path -> new path: imports of the old path give the new module
    "pellucid.data": "pellucid.models.data",
    "pellucid.efficientnet": "pellucid.models.efficientnet",
    "pellucid._training": "pellucid.models.training",
    "pellucid.layers": "pellucid.models.layers",
    "pellucid.text.model": "pellucid.models.langid",
    "pellucid.render": "pellucid.drawing.render",
    "pellucid.overlay": "pellucid.drawing.overlay",
    "pellucid.report": "pellucid.drawing.report",
}
RENAMED = {  # old module path -> new module path; the old dotted path names the function now
    "pellucid.metrics.road": "pellucid.metrics.imputation",
    "pellucid.metrics.compare": "pellucid.metrics.table",
    "pellucid.metrics.explanation_attack": "pellucid.metrics.manipulation",
    "pellucid.adversarial.apgd": "pellucid.adversarial.auto_pgd",
    "pellucid.adversarial.autoattack": "pellucid.adversarial.ensemble",
    "pellucid.adversarial.fab": "pellucid.adversarial.boundary",
    "pellucid.adversarial.square": "pellucid.adversarial.score_based",
    "pellucid.attribution.deeplift": "pellucid.attribution.reference",
    "pellucid.attribution.explain": "pellucid.attribution.by_name",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        if name in RENAMED:
            function = name.rsplit(".", 1)
            raise ModuleNotFoundError(f"the module {name} is now {RENAMED[name]} ({function[0]}.{function[1]} is "
                                      "the function of that name)", name=name)
        return None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self.spec = module.__spec__  # the import system sets the old name's spec on the module: put it back
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
