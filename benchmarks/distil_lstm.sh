#!/usr/bin/env bash
# BERT -> BiLSTM distillation on full SST-2 (Tang et al., 2019): writes the augmented transfer
# set with the teacher's logits, trains the same BiLSTM without (train) and with (distil)
# distillation, then times student against teacher in ONNX Runtime. An existing
# OUTPUT_DIR/augmented.tsv is reused (it depends only on the teacher and the seed).
# Usage: benchmarks/distil_lstm.sh TEACHER_EXPORT_DIR [OUTPUT_DIR] [extra distil_lstm flags]
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=${1:?usage: benchmarks/distil_lstm.sh TEACHER_EXPORT_DIR [OUTPUT_DIR]}
out=${2:-outputs/distil_lstm}; shift 2 || shift $#
PYTHON=${PYTHON:-.venv/bin/python}
data_dir=${DATA_DIR:-../shared/data/sst2}
[ -f "$out/augmented.tsv" ] || "$PYTHON" generate_dataset.py --input="$data_dir" --model="$teacher" \
  --output="$out/augmented.tsv" --augment_factor=20
lstm=(--data_dir="$data_dir" --save_checkpoints_steps=2000 --early_stopping_patience=3 "$@")
"$PYTHON" distil_lstm/main.py --mode=train --output_dir="$out/train" --num_train_epochs=10 "${lstm[@]}"
"$PYTHON" distil_lstm/main.py --mode=distil --output_dir="$out/distil" --augmented_file="$out/augmented.tsv" \
  --num_train_epochs=3 "${lstm[@]}"
for run in train distil; do
  "$PYTHON" distil_lstm/main.py --mode=test --data_dir="$data_dir" --output_dir="$out/$run"
  echo "$run: $(tr '\n' ' ' < "$out/$run/eval_results.txt")"
done
"$PYTHON" benchmarks/student_speed.py --data_dir="$data_dir" --teacher_dir="$teacher" --students="bilstm=$out/distil/export" \
  --bert_base_reference \
  | tee "$out/student_speed.json"
