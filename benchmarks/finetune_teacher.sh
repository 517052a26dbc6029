#!/usr/bin/env bash
# Fine-tunes the offline default teacher (all-MiniLM-L6-v2) on the full SST-2 train set,
# evaluates on dev, predicts test and exports (<OUTPUT_DIR>/export, what the students read).
# Usage: benchmarks/finetune_teacher.sh [OUTPUT_DIR] [extra run_classifier flags]
# SST-2 comes from $DATA_DIR (default ../shared/data/sst2, the GLUE TSV files) when that
# folder exists, otherwise from tfds glue/sst2 (which needs to download once).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/teacher}; shift || true
PYTHON=${PYTHON:-.venv/bin/python}
data_dir=${DATA_DIR:-../shared/data/sst2}
data_flag=()
[ -d "$data_dir" ] && data_flag=(--data_dir="$data_dir")
"$PYTHON" bert_finetune/run_classifier.py --task_name=sst-2 --do_train --do_eval --do_predict \
  "${data_flag[@]}" --output_dir="$out" --max_seq_length=128 \
  --train_batch_size=32 --eval_batch_size=64 --predict_batch_size=64 --learning_rate=5e-5 \
  --num_train_epochs=3 --warmup_proportion=0.1 --save_checkpoints_steps=500 "$@"
