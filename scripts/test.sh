#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the whole test suite under a virtual display,
# in FPMINR_TEST_WORKERS pytest-xdist processes (default 2, one per core of the CI machine; each
# keeps torch to one thread, tests/conftest.py), whole test files per process (module fixtures
# are built once). FPMINR_TEST_WORKERS=0 runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
workers=${FPMINR_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != 0 ]; then parallel=(-n "$workers" --dist loadfile); fi
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "${parallel[@]}" "$@"
fi
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
