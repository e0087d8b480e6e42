"""The package's shape: one idea per module, no module past ~450 lines, no import cycle (issue #14)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pellucid
import pellucid as pl

ROOT = Path(pellucid.__file__).parent
MAX_LINES = 460


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every pellucid module that ``name`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    return {m for m in found if m in modules and m != name}


def test_no_module_is_past_the_size_of_one_idea():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules along their ideas: {long}"


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's __init__ re-exports its submodules; a submodule importing its own package's __init__
    # (or pellucid's) would close a loop
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_public_names_are_defined_where_editors_can_find_them():
    """Explicit imports in pellucid/__init__.py: no module-level __getattr__ hides a definition."""
    source = (ROOT / "__init__.py").read_text()
    assert "def __getattr__" not in source and "_Package" not in source
    for name in pellucid.__all__:
        assert getattr(pellucid, name) is not None, name


def _all_modules() -> dict[str, object]:
    import importlib

    return {name: importlib.import_module(name) for name in _modules() if not name.endswith("__main__")}


def test_no_function_shadows_its_module():
    """``pellucid.metrics.imputation`` is a module and ``pellucid.metrics.road`` the function: one dotted path
    names one thing, so patching, ``python -m`` and API docs find what they ask for."""
    import sys

    shadowed = []
    for name in _all_modules():
        if "." not in name:
            continue
        parent, last = name.rsplit(".", 1)
        if getattr(sys.modules[parent], last, sys.modules[name]) is not sys.modules[name]:
            shadowed.append(name)
    assert not shadowed, f"these modules are hidden by a name of their package: {shadowed}"


RANKS = (  # a module may import only modules of its own rank or below: core -> models -> methods -> ...
    ("pellucid.models", 1), ("pellucid.drawing.render", 1), ("pellucid.drawing.overlay", 1),
    ("pellucid.drawing.display", 1), ("pellucid.drawing.display_learned", 1), ("pellucid.drawing.strategies", 1),
    ("pellucid.attribution", 2), ("pellucid.adversarial", 2), ("pellucid.featureviz", 2), ("pellucid.metrics", 2),
    ("pellucid.text", 2), ("pellucid.shortcuts", 2), ("pellucid.concept", 2), ("pellucid.dataset", 3),
    ("pellucid.drawing", 4), ("pellucid.batch", 4), ("pellucid.cli", 4), ("pellucid.web", 4),
)


def _rank(name: str) -> int:
    if name == "pellucid":
        return 9  # the package re-exports everything
    for prefix, rank in RANKS:
        if name == prefix or name.startswith(prefix + "."):
            return rank
    return 0  # the core: _state, _grad, _checks, targets, registry, io, ...


def test_the_tree_reads_top_to_bottom():
    """core -> models -> methods -> data-set stage -> report and front ends, no import running back up
    (imports inside functions included)."""
    modules = _modules()
    upward = [f"{name} ({_rank(name)}) imports {dep} ({_rank(dep)})"
              for name, path in modules.items() for dep in sorted(_imports(name, path, modules))
              if _rank(dep) > _rank(name) and not name.startswith(dep + ".")]
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_every_model_has_a_record_that_every_front_end_lists(capsys):
    from pellucid import cli, registry
    from pellucid.web import catalog

    records = registry.models()
    assert {"digits", "digits-nobn", "imagenet", "langid", "resnet18", "vit_b_16"} <= set(records)
    listed = dict(pl.list_models())
    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    explain_help = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        cli.main(["explain-text", "--help"])
    text_help = " ".join(capsys.readouterr().out.split())
    web = catalog.builtin_models()
    for name, record in records.items():
        assert name in listed and listed[name] == record.title
        if record.kind == "text":
            assert name in text_help and name in catalog.text_models() and name not in web
        else:
            assert name in explain_help and name in web and web[name][1] == record.title
    for family in registry.families().values():
        assert any(family.name in row for row in listed)


def test_load_model_reads_the_records_only(monkeypatch):
    """A model registered at run time is loadable, listed and sampled with no other change."""
    import dataclasses

    from pellucid import registry

    built = []
    record = dataclasses.replace(registry.models()["digits"], name="digits-copy", title="a copy of digits",
                                 loader=lambda weights=None: built.append(weights) or pl.load_model("digits"))
    monkeypatch.setitem(registry._MODELS, "digits-copy", record)
    assert pl.load_model("digits-copy") is not None and built == [None]
    assert ("digits-copy", "a copy of digits") in pl.list_models()
    assert pl.sample_images("digits-copy", n=3)[0].shape == (3, 1, 28, 28)
    with pytest.raises(pl.PellucidError, match="digits-copy"):
        pl.load_model("digits-cpy")


def test_old_module_paths_keep_working_or_name_the_new_one():
    import importlib

    import pellucid.data

    import pellucid.models.data

    assert pellucid.data is pellucid.models.data
    assert importlib.import_module("pellucid.report").build_report is not None
    from pellucid.render import html_report  # noqa: F401

    for old, new in (("pellucid.metrics.road", "pellucid.metrics.imputation"),
                     ("pellucid.adversarial.fab", "pellucid.adversarial.boundary")):
        with pytest.raises(ImportError, match=new.replace(".", r"\.")):
            importlib.import_module(old)
    assert callable(pl.metrics.road) and callable(pl.adversarial.fab)
