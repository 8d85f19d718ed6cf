#!/usr/bin/env bash
# The "own footage" measurements of docs/own-footage.md (docs/accuracy/own_footage.json), as they were run:
#   1. the file path = the generator path: the same held-out videos read from the generator, from
#      mp4v files (lossy, ~31 dB PSNR) and from FFV1 files (lossless); one epoch of stage 1 from the
#      shipped checkpoint trained on the generator and on rendered files, each scored on its own path;
#   2. fine-tuning the shipped checkpoint to 5 merged activities with their own names vs sampler and
#      heads trained from scratch on the same data.
# Usage: bash tools/measure_own_footage.sh WORKDIR   (about 1 h on 2 idle cores; needs ~3 GB)
set -euo pipefail
W=${1:?usage: measure_own_footage.sh WORKDIR}
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
C=configs/models/lvm-tiny.yaml; S=checkpoints/lvm-tiny.safetensors; M=$W/m
mkdir -p "$M"
run() { local name=$1; shift; local t0=$(date +%s); "$@" > "$M/$name.log" 2>&1; echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$M/times.txt"; }

lvm-data render --seeds 0-3 --like eval --out "$W/eval4" --no-progress
lvm-data render --seeds 0-3 --like eval --codec ffv1 --out "$W/eval4-ffv1" --no-progress
lvm-data render --seeds 0-7 --like train --out "$W/train8" --no-progress
MAP="--map pick_up=handle --map put_back=handle --map scan=scan_item --map bag=leave_counter --map hand_over=leave_counter --map hold=look_at --map inspect=look_at --map browse=browse_basket"
python -m tools.data.relabel_dataset "$W/train8" "$W/train8-5" $MAP
python -m tools.data.relabel_dataset "$W/eval4" "$W/eval4-5" $MAP

# 1. file path = generator path
run shipped_gen   lvm-eval --queries 300 --json "$M/shipped_gen.json" --no-progress
run shipped_files lvm-eval --data "$W/eval4" --queries 300 --json "$M/shipped_files.json" --no-progress
run shipped_ffv1  lvm-eval --data "$W/eval4-ffv1" --queries 300 --json "$M/shipped_ffv1.json" --no-progress
run ft_gen    lvm-train --config $C --out "$M/ft_gen" --seed 0 --init-from $S --heads-steps 0 --epochs 1 --no-progress
run ft_gen_s1 lvm-train --config $C --out "$M/ft_gen_s1" --seed 1 --init-from $S --heads-steps 0 --epochs 1 --no-progress
run ft_files  lvm-train --config $C --data "$W/train8" --out "$M/ft_files" --seed 0 --init-from $S --heads-steps 0 --epochs 1 --no-progress
run ev_ft_gen       lvm-eval --checkpoint "$M/ft_gen/lvm-tiny.safetensors" --queries 300 --json "$M/ft_gen_on_gen.json" --no-progress
run ev_ft_gen_s1    lvm-eval --checkpoint "$M/ft_gen_s1/lvm-tiny.safetensors" --queries 300 --json "$M/ft_gen_s1_on_gen.json" --no-progress
run ev_ft_files     lvm-eval --checkpoint "$M/ft_files/lvm-tiny.safetensors" --data "$W/eval4" --queries 300 --json "$M/ft_files_on_files.json" --no-progress
run ev_ft_files_gen lvm-eval --checkpoint "$M/ft_files/lvm-tiny.safetensors" --queries 300 --json "$M/ft_files_on_gen.json" --no-progress

# 2. fine-tuning to 5 merged activities (their own names) vs from scratch (backbone from the shipped checkpoint)
run ft5_28   lvm-train --config $C --data "$W/train8-5" --out "$M/ft5_28" --seed 0 --init-from $S --heads-steps 0 --epochs 1 --max-steps 28 --no-progress
run ft5_112  lvm-train --config $C --data "$W/train8-5" --out "$M/ft5_112" --seed 0 --init-from $S --heads-steps 0 --epochs 1 --no-progress
run fs5_112  lvm-train --config $C --data "$W/train8-5" --out "$M/fs5_112" --seed 0 --backbone-from $S --heads-steps 0 --epochs 1 --no-progress
run fs5_672  lvm-train --config $C --data "$W/train8-5" --out "$M/fs5_672" --seed 0 --backbone-from $S --heads-steps 0 --no-progress
for r in ft5_28 ft5_112 fs5_112 fs5_672; do
  run "ev_$r" lvm-eval --checkpoint "$M/$r/lvm-tiny.safetensors" --data "$W/eval4-5" --json "$M/${r}_on_eval4-5.json" --no-progress
done
run ev_random5 lvm-eval --checkpoint "$M/ft5_28/lvm-tiny.safetensors" --data "$W/eval4-5" --sampler random --json "$M/random_on_eval4-5.json" --no-progress
