"""TinyBERT task distillation: a fine-tuned teacher (an export folder of run_classifier.py) into a
smaller BERT, in two stages on (augmented) task data.

    python tinybert/task_distill.py --teacher_model=outputs/teacher/export \\
        --student_config=tinybert/configs/student_3l_384.json --data_dir=../shared/data/sst2 \\
        --augmented_file=outputs/augmented.tsv --output_dir=outputs/tinybert

Stage 1 (`intermediate`): embeddings, hidden states and pre-softmax attention scores, matched as
`--layer_map` says (a rule: uniform, last, skip, optionally with its features as in
`uniform:hidden`; or a JSON file), teacher online, constant
learning rate. Stage 2 (`prediction`): soft cross-entropy against the teacher's logits at
`--temperature` (from the transfer set when it has logit columns, else the teacher online; with
`--hard_label_weight` mixing in the gold labels: 1.0 is plain fine-tuning), warm-up and linear
decay, best-by-dev kept. `--stage=both` (default) runs stage 1 then stage 2 in one
`--output_dir`; each stage has its own folder (`intermediate/`, `prediction/`: checkpoints,
TensorBoard, best), so a killed run resumes in the right stage at the right step, and
`--stage=prediction` after `--stage=intermediate` continues from stage 1's student
(`intermediate/student.weights.h5`, written when stage 1 ends), or from another run's with
`--intermediate_dir`. The best student is exported
to `<output_dir>/export` like the teacher (SavedModel, ONNX, INT8 ONNX, Hugging Face files);
the projections are training-only and dropped. `--dry_run` prints the resolved layer map and
the parameter counts, and exits. The job and its stages: `bertdistill/tasks/task_distillation.py`.
"""

from __future__ import annotations

from absl import flags

from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.tasks import runner
from bertdistill.tasks.task_distillation import TaskDistillation

script_flags.define_task_distill_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    script_flags.validate_task_distill_flags(FLAGS)
    runner.run(TaskDistillation(script_flags.task_distill_config(FLAGS)))


if __name__ == "__main__":
    entry.run(main)
