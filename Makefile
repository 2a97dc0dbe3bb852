# One command runs the node, one runs the tests; both create .venv and install into it first.
#   make run    start the node (pacs-node serve) with config/node.toml: DICOM on 127.0.0.1:11112, AE PACSNODE
#   make demo   generate a demo phantom series and analyse it offline (SEG + SR into demo/results)
#   make test   the whole test suite (unit, integration, e2e, interop); as root it first installs the Debian
#               tools the tests talk to (tools/install-test-deps.sh: DCMTK, Orthanc, dicom3tools, pixelmed,
#               a JRE, Chromium, Prometheus); otherwise it prints the apt-get line to run
#   make lint   ruff + mypy --strict on node/
#   make train  retrain models/lung-nodule-ct (needs the 'train' extra: torch 2.13.0 CPU)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: run demo test test-tools lint train evaluate bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/pacs-node check-config config/node.toml
	$(VENV)/bin/pacs-node serve --config config/node.toml

demo: $(STAMP)
	$(VENV)/bin/pacs-node synth ct --out demo/ct --slices 120 --seed 7
	$(VENV)/bin/pacs-node analyse demo/ct --out demo/results

test-tools:
	@bash tools/install-test-deps.sh

test: test-tools $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check node tests bench models
	$(VENV)/bin/ruff format --check node tests bench models
	$(VENV)/bin/mypy

train: $(STAMP)
	$(PY) -m pip install --quiet -e '.[train]'
	$(PY) models/lung-nodule-ct/train.py

evaluate: $(STAMP)
	$(VENV)/bin/pacs-node models evaluate lung-nodule-ct --series 10

bench: $(STAMP)
	$(PY) bench/analyse.py
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) demo build *.egg-info .pytest_cache .mypy_cache .ruff_cache
