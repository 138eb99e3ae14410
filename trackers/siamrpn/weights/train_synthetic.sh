#!/usr/bin/env bash
# The commands that produced siamrpn_alex_tiny_synthetic.pth: SOT pre-training of
# configs/siamrpn_alex_tiny.yaml on synthetic data only (run from the repository root).
# 9 stages, 19,000 steps x 16 pairs, about 110 min on one CPU thread (README.md beside this file).
# Stages 1-4 use the default 6-sequence train split; stages 5-8 a 24-sequence train split drawn
# by the same generator and seed (its first 6 sequences are the default ones; no test sequence);
# stage 9 a 48-sequence one (its first 24 are the 24-sequence split).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-weights/sot_stages}
mkdir -p "$OUT"
[ -d data/synthetic/train ] || "$PY" -m deepmot.datasets.synthetic --out data/synthetic
[ -d data/synthetic_train24/train ] || \
  "$PY" -m deepmot.datasets.synthetic --out data/synthetic_train24 --num-train 24 --num-test 0
[ -d data/synthetic_train48/train ] || \
  "$PY" -m deepmot.datasets.synthetic --out data/synthetic_train48 --num-train 48 --num-test 0

# stage 1: from scratch, AdamW 3e-3 -> 1e-4, 1200 steps (configs/siamrpn_sot_pretrain.yaml)
"$PY" -m trackers.siamrpn.pretrain --config configs/siamrpn_sot_pretrain.yaml --no-eval --out "$OUT/s1.pth"

# later stages: from the previous weights, AdamW 1e-3 -> 3e-5; hard = share of negative pairs
# taken from the same scene (a look-alike), neg = share of negative pairs; more --set options after
stage() {  # stage N DATA STEPS SEED HARD NEG [--set KEY=VALUE ...]
  "$PY" -m trackers.siamrpn.pretrain --config configs/siamrpn_sot_pretrain.yaml --no-eval \
    --init "$OUT/s$(($1 - 1)).pth" --out "$OUT/s$1.pth" --data "$2" --steps "$3" --seed "$4" \
    --set base_lr=0.001 --set end_lr=0.00003 --set warmup_steps=1 \
    --set hard_negatives="$5" --set "model_overrides=[train.neg=$6]" "${@:7}"
}
stage 2 data/synthetic 600 1 0.0 0.2     # the weights shipped before hard negatives
stage 3 data/synthetic 1200 2 0.8 0.3
stage 4 data/synthetic 2000 3 0.9 0.4
stage 5 data/synthetic_train24 2000 4 0.9 0.4
stage 6 data/synthetic_train24 3000 5 0.9 0.4
stage 7 data/synthetic_train24 3000 6 0.9 0.4
# stage 8: online hard-negative anchor mining, the 16 highest-scoring background anchors of each
# pair added to its negatives (the look-alikes inside the crop that random negatives rarely pick)
stage 8 data/synthetic_train24 3000 8 0.9 0.4 --set hard_anchors=16
# stage 9: the same on a 48-sequence train split (its first 24 sequences are the 24-sequence split)
stage 9 data/synthetic_train48 3000 9 0.9 0.4 --set hard_anchors=16
