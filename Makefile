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
