#!/usr/bin/env bash
# The main job on the bundled sample data.
#
# With a display (or --gui): set up, then open napari with the simulated tilted blood-smear raw
# data loaded and the FPM-INR reconstruction widget docked, ready to press Start.
# Without a display (or --batch): set up, then run the same job from the command line —
# simulate the tilted slide, train the FPM-INR model, render a z-stack and an all-in-focus
# image with its depth map, reconstruct the conventional stack for comparison — and print
# where every result went.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-auto}
bash scripts/setup.sh
FP=.venv/bin/fpminr
if [ "$mode" = "--gui" ] || { [ "$mode" = "auto" ] && [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; }; then
  exec $FP gui
fi

OUT=${OUT:-results/demo}
mkdir -p "$OUT"
$FP simulate "$OUT/tilted.tif" --preset tilted --size 64 --seed 1
$FP info "$OUT/tilted.tif"
$FP reconstruct "$OUT/tilted.tif" -o "$OUT/tilted.fpminr" --method inr --z-min -20 --z-max 20
$FP info "$OUT/tilted.fpminr"
$FP render "$OUT/tilted.fpminr" -o "$OUT/all_in_focus.npz" --all-in-focus --raw "$OUT/tilted.tif"
$FP render "$OUT/tilted.fpminr" -o "$OUT/stack.tif" --z-step 0.25 --phase
$FP reconstruct "$OUT/tilted.tif" -o "$OUT/fpm_stack.npz" --method fpm --z-min -20 --z-max 20 --z-step 0.25
echo
echo "results in $OUT/:"
echo "  tilted.tif (+ .json, .truth.npz)  simulated raw data and ground truth"
echo "  tilted.fpminr                     trained FPM-INR model (open it in napari: .venv/bin/fpminr gui $OUT/tilted.fpminr)"
echo "  stack.tif                         161-plane amplitude+phase ImageJ hyperstack rendered from the model"
echo "  all_in_focus.npz                  all-in-focus amplitude and depth map (um)"
echo "  fpm_stack.npz                     conventional per-plane FPM stack, for comparison"
ls -la "$OUT"
