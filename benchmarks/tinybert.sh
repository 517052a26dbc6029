#!/usr/bin/env bash
# TinyBERT on full SST-2: a transfer set with the teacher's logits, then the students of the
# README's table, each timed in ONNX Runtime against the teacher in one run at the end.
#   (a) 3-layer 384-wide student from teacher layers 2, 4, 6: stage 1 + stage 2, augmented data
#   (b) the same student fine-tuned on the gold labels only (no teacher, no augmentation)
#   (c) stage 2 only (prediction-layer distillation on the augmented data)
#   (d) stage 1 + stage 2 without augmentation (SST-2 train, teacher online)
#   (e) a smaller student: 2 layers (teacher layers 3, 6), stage 1 + stage 2, augmented data
# Usage: benchmarks/tinybert.sh TEACHER_EXPORT_DIR [OUTPUT_DIR] [RUNS, default "a b c d e"]
# Budget knobs (environment): AUGMENT_FACTOR (transfer set, default 2), STAGE1_EXAMPLES (stage 1
# subsample of the augmented set, default 67349), STAGE1_EPOCHS (1), STAGE2_EPOCHS (2), SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=${1:?usage: benchmarks/tinybert.sh TEACHER_EXPORT_DIR [OUTPUT_DIR] [RUNS]}
out=${2:-outputs/tinybert}
runs=${3:-a b c d e}
PYTHON=${PYTHON:-.venv/bin/python}
data_dir=${DATA_DIR:-../shared/data/sst2}
seed=${SEED:-12345}
mkdir -p "$out"
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$out/timings.txt"; }

if [ ! -f "$out/augmented.tsv" ]; then
  log "transfer set: start"
  "$PYTHON" generate_dataset.py --input="$data_dir" --model="$teacher" --output="$out/augmented.tsv" \
    --augment_factor="${AUGMENT_FACTOR:-2}" --seed="$seed"
  log "transfer set: done ($(($(wc -l < "$out/augmented.tsv") - 1)) rows)"
fi

common=(--teacher_model="$teacher" --data_dir="$data_dir" --max_seq_length=128 --train_batch_size=32
        --save_checkpoints_steps=1000 --log_every_steps=500 --seed="$seed")
s3=tinybert/configs/student_3l_384.json
s2=tinybert/configs/student_2l_384.json
stage1=(--intermediate_epochs="${STAGE1_EPOCHS:-1}" --intermediate_max_examples="${STAGE1_EXAMPLES:-67349}"
        --prediction_epochs="${STAGE2_EPOCHS:-2}")
students=()
for run in $runs; do
  log "($run): start"
  case $run in
    a) "$PYTHON" tinybert/task_distill.py "${common[@]}" --student_config=$s3 --augmented_file="$out/augmented.tsv" \
         "${stage1[@]}" --output_dir="$out/a" ;;
    b) "$PYTHON" tinybert/task_distill.py "${common[@]}" --student_config=$s3 --stage=prediction \
         --hard_label_weight=1.0 --num_train_epochs=3 --learning_rate=5e-5 --output_dir="$out/b" ;;
    c) "$PYTHON" tinybert/task_distill.py "${common[@]}" --student_config=$s3 --augmented_file="$out/augmented.tsv" \
         --stage=prediction --num_train_epochs="${STAGE2_EPOCHS:-2}" --output_dir="$out/c" ;;
    d) "$PYTHON" tinybert/task_distill.py "${common[@]}" --student_config=$s3 --intermediate_epochs="${STAGE1_EPOCHS:-1}" \
         --prediction_epochs=3 --output_dir="$out/d" ;;
    e) "$PYTHON" tinybert/task_distill.py "${common[@]}" --student_config=$s2 --augmented_file="$out/augmented.tsv" \
         "${stage1[@]}" --output_dir="$out/e" ;;
  esac
  log "($run): done: $(tr '\n' ' ' < "$out/$run/eval_results.txt")"
  students+=("$run=$out/$run/export")
done
"$PYTHON" benchmarks/student_speed.py --data_dir="$data_dir" --teacher_dir="$teacher" \
  --students="$(IFS=,; echo "${students[*]}")" | tee "$out/student_speed.json"
log "speed: done"
