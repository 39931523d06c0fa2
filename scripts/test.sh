#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the whole test suite under a virtual display.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest "$@"
