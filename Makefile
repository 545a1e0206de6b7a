# Both targets create .venv on first use. torch/torchvision are pinned: a looser spec may pull a
# multi-GB build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vistra demo

test: $(STAMP)
	$(BIN)/pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/supcon.py
	$(BIN)/python benchmarks/mae.py --quick
	$(BIN)/python benchmarks/detr.py
	$(BIN)/python benchmarks/mask2former.py
	$(BIN)/python benchmarks/mask2former_demo_step.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/cli.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) lightning_logs vistra_runs test-artifacts
