#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), checks lint and formatting, runs the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k fold`. Tests run in
# parallel, one pytest-xdist worker per core (the README gives the measured time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q -n auto "$@"
