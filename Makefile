# BitGen ROS: `make test` sets up everything from a fresh clone (venv, pinned deps, ROS 2,
# colcon build) and runs the test suite. See README.md "Install".
#
#   make setup   venv + pinned Python deps + ROS 2 Kilted wheels (unless ROS_DISTRO is set)
#   make build   setup + colcon build of msg/ srv/ and the package into install/
#   make test    build + pytest tests/   (PYTEST_ARGS="-k memory -x" to narrow it)
#   make clean   remove colcon's build/ install/ log/ (the venv stays)
#
# PYTHON=/path/to/python3.11 picks the interpreter of a new venv; VENV=dir moves the venv.

PYTHON ?= python3.11
VENV ?= .venv
PYTEST_ARGS ?=
export PYTHON VENV

SETUP := scripts/setup/setup.sh

.PHONY: setup build test clean

setup:
	@$(SETUP) setup

build:
	@$(SETUP) build

test:
	@$(SETUP) test $(PYTEST_ARGS)

clean:
	rm -rf build install log
	find bitgen_ros -maxdepth 1 -type l \( -name msg -o -name srv -o -name '*.so' \) -delete

# --- demo (owned by the ROS layer: bitgen_ros/demo.py, bitgen_ros/runner.py) ----------------
# The selector node with the shipped model, generated scenes and the sample tasks, then a
# memory edit ("the drone is grounded") and a forget that change an answer; exits by itself.
# DEMO_ARGS="--model-dir DIR --keep-logs" passes options through.
DEMO_ARGS ?=
.PHONY: demo

demo: build
	@bash -c '. scripts/setup/env.sh && exec python -m bitgen_ros.demo $(DEMO_ARGS)'

# --- train / model (owned by training: stage1.py, stage2.py, configs/, models/default) -------
# The default pipeline: it trains the shipped models/default (bitgen-tiny-19366bce5646, v8;
# models/default/MODEL_CARD.md, reports/ship_v8); stage 1 + 2 took 45.2 min on 2 cores.
# `make model` exports over models/default and keeps its MODEL_CARD.md (update the card).
#   make train-data   generate the corpora (seeded: identical bytes on every machine)
#   make train        stage 1 + stage 2 with the default configs (training/configs/*.yaml)
#   make model        train, export to models/default, evaluate into reports/eval
TRAIN_PY := $(VENV)/bin/python
.PHONY: train-data train model

train-data:
	$(TRAIN_PY) -m bitgen_core.data.generate --out runs/data/corpus --n 24000 --seed 0 --quiet
	$(TRAIN_PY) -m bitgen_core.data.generate --out runs/data/scenes --n 3000 --seed 1 --images --memory-frac 0.1 --memory-cases 20 --quiet

train: train-data
	$(TRAIN_PY) training/stage1.py --config training/configs/stage1.yaml
	$(TRAIN_PY) training/stage2.py --config training/configs/stage2.yaml

model: train
	$(TRAIN_PY) training/export.py --checkpoint runs/stage2/model.pt --out models/default --force
	$(TRAIN_PY) training/evaluate.py --model-dir models/default --dev data/dev/tasks.jsonl \
	    --memory-cases data/dev/memory_cases.jsonl --train-data runs/data/corpus \
	    --heldout runs/data/corpus/heldout.jsonl --out reports/eval \
	    --train-logs runs/stage1/metrics.jsonl runs/stage2/metrics.jsonl
