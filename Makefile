PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench realmusic clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install
	$(BIN)/clmr demo --out demo-run

bench: install
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/augment.py
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/evaluate.py

# both tables of docs/realmusic.md (labels and degraded queries) for the runner's runs: about 2 h 15 min
# on 2 idle CPU cores (3 x 30 min of pre-training, then scoring); REALMUSIC_ARGS go to run.py,
# REALMUSIC_BUILD_ARGS to build.py (the first set: REALMUSIC_BUILD_ARGS="--classes v1 --min-tracks 10")
realmusic: install
	$(BIN)/python benchmarks/realmusic/build.py --out realmusic $(REALMUSIC_BUILD_ARGS)
	$(BIN)/python benchmarks/realmusic/run.py --data realmusic --work realmusic-work $(REALMUSIC_ARGS)
	$(BIN)/python benchmarks/realmusic/score.py --store realmusic-work/store \
		$$(for r in realmusic-work/run-seed*; do printf -- '--run %s ' "$$r"; done)
	$(BIN)/python benchmarks/realmusic/queries.py --store realmusic-work/store \
		$$(for r in realmusic-work/run-seed*; do printf -- '--run %s ' "$$r"; done)

clean:
	rm -rf $(VENV) demo-run .pytest_cache
