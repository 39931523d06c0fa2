#!/usr/bin/env bash
# Set up everything napari-fpminr needs on a fresh Debian machine with Python 3.11:
# system libraries for a headless Qt display (when root), a virtual environment in .venv,
# CPU torch 2.13.0 (installed first so the resolver keeps it), and the package with its test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

QT_LIBS="xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libdbus-1-3 libgl1 libegl1
libfontconfig1 libglib2.0-0"

missing=()
if command -v dpkg-query >/dev/null; then
  for pkg in $QT_LIBS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
fi
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root; please install: ${missing[*]} (needed for the napari GUI and its tests)" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup: ready (.venv)" >&2
