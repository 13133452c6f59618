#!/usr/bin/env bash
# Does CSD pay off? Three runs at one equal step budget from the same teacher:
#   (a) CSD (contrastive on)  (b) joint L1 for all widths  (c) the 0.25 student alone.
# Plus (d): the 0.25 student alone for the CPU time of (a): 11x the steps, since a step of
# (a) measured 1.60 s and one of (c) 0.14 s on 2 cores.
# Usage: bash bench/ablation.sh [STEPS] [TEACHER]
# Checkpoints and weights go to runs/ablation/; evaluations, cards and the table to weights/ablation/.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-500}
teacher=${2:-weights/teacher-x4.safetensors}
csd=.venv/bin/csd-sr
common=(--config configs/x4-csd.toml --init-weights "$teacher" --steps "$steps" --val-every "$steps")
student_alone="--contra-lambda 0 --t-lambda 0 --student-widths 0.25"
equal_time_steps=$((steps * 11))

declare -A variant=(
  [a-csd]=""
  [b-joint-l1]="--contra-lambda 0"
  [c-student-alone]="$student_alone"
  [d-student-alone-equal-time]="$student_alone --steps $equal_time_steps --val-every $equal_time_steps"
)
for name in a-csd b-joint-l1 c-student-alone d-student-alone-equal-time; do
  # shellcheck disable=SC2086 # the variant flags are meant to split
  $csd train "${common[@]}" ${variant[$name]} --out-dir "runs/ablation/$name" --export "runs/ablation/$name.safetensors"
  $csd evaluate --weights "runs/ablation/$name.safetensors" --no-timing \
    --data ../shared/data/Set5/HR ../shared/data/Set14/HR --out "weights/ablation/$name"
  cp "runs/ablation/$name.json" "weights/ablation/$name.card.json"
done
.venv/bin/python -m bench.ablation_table weights/ablation | tee weights/ablation/table.md
