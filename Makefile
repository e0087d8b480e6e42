# Two commands do everything on a fresh clone: `make test` and `make report`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

DOCS_VENV  := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed

.PHONY: test report lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

report: $(STAMP)
	$(VENV)/bin/pellucid report --also imagenet

lint: $(STAMP)
	$(VENV)/bin/ruff check pellucid tests benchmarks

# the documentation site, offline, into site/ (strict: a broken reference or a warning fails); its own venv
# holds the `docs` extra only (read from pyproject.toml), not pellucid: mkdocstrings reads the source statically
$(DOCS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q --upgrade pip
	$(DOCS_VENV)/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' > $(DOCS_VENV)/requirements.txt
	$(DOCS_VENV)/bin/python -m pip install -q -r $(DOCS_VENV)/requirements.txt
	touch $(DOCS_STAMP)

# the tutorials are run first (pellucid's venv; a run copy is kept while its notebook and pellucid are unchanged),
# so their pages show figures
docs: $(DOCS_STAMP) $(STAMP)
	$(PY) examples/run_notebooks.py build/notebooks
	PELLUCID_NOTEBOOKS=build/notebooks NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --quiet

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DOCS_VENV) report site .pytest_cache
