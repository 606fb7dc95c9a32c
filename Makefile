PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench realmusic realmusic-ablation clean

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

# the ablation of docs/realmusic.md on the same set, at 8 kHz, resumable (rerun after an interruption):
# the curves (chain off and tiny's chain, seed 2, 5-60 min: about 1 h 20 min), the one-seed 5-minute
# screen of all 18 variants (about 1 h 10 min), then the 3-seed 30-minute rows (about 1 h 45 min):
# about 4 h 15 min on 2 idle CPU cores; each step prints its table (OUT/table.md, curves in OUT/curves.png)
ABLATE := $(BIN)/python benchmarks/realmusic/ablate.py --store realmusic-work/store
realmusic-ablation: install
	$(BIN)/python benchmarks/realmusic/build.py --out realmusic $(REALMUSIC_BUILD_ARGS)
	$(BIN)/clmr preprocess realmusic/audio --labels realmusic/labels.csv --out realmusic-work/store \
		--sample-rate 8000 --workers 2
	$(ABLATE) --out realmusic-work/curves-8k --variants off,tiny-chain --seeds 2 --minutes 5,10,20,30,60
	$(ABLATE) --out realmusic-work/ablate-8k --seeds 2 --minutes 5
	$(ABLATE) --out realmusic-work/full-8k --variants off,tiny-chain --seeds 0,1,2 --minutes 30

clean:
	rm -rf $(VENV) demo-run .pytest_cache
