#!/usr/bin/env bash
# The main job on bundled/simulated data: set up, simulate a tilted blood-smear-like slide,
# train the FPM-INR model on it, render an all-in-focus image + depth map and a z-stack,
# and print where everything went. Pass --gui to open the result in napari afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-results/demo}
mkdir -p "$OUT"
FP=.venv/bin/fpminr
$FP simulate "$OUT/tilted.tif" --preset tilted --size 64 --seed 1
$FP info "$OUT/tilted.tif"
$FP reconstruct "$OUT/tilted.tif" -o "$OUT/tilted.fpminr" --method inr --z-min -20 --z-max 20
$FP info "$OUT/tilted.fpminr"
$FP render "$OUT/tilted.fpminr" -o "$OUT/all_in_focus.npz" --all-in-focus
$FP render "$OUT/tilted.fpminr" -o "$OUT/stack.tif" --z-step 1 --phase
$FP reconstruct "$OUT/tilted.tif" -o "$OUT/fpm_stack.npz" --method fpm --z-min -20 --z-max 20 --z-step 1
echo
echo "results in $OUT/:"
ls -la "$OUT"
if [ "${1:-}" = "--gui" ]; then
  exec .venv/bin/fpminr gui "$OUT/tilted.fpminr"
fi
