#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine with Python 3.11 for this project:
#   - the Fashion-MNIST files (Debian package dataset-fashion-mnist), the offline data set;
#   - a virtualenv in .venv with the pinned requirements.txt, and this checkout installed
#     in it as the package (editable: the commands crest, crest-predict, crest-diagnose,
#     crest-report run this folder's code).
# Safe to re-run: each part is skipped when already done. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing dataset-fashion-mnist (apt)"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq dataset-fashion-mnist > /dev/null
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing requirements.txt into .venv (about a minute)"
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

if [ ! -x .venv/bin/crest-predict ]; then
  echo "setup: installing this checkout into .venv (the crest commands)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation --no-index -e .
fi
