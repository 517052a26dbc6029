"""Fine-tunes, evaluates, predicts with and exports a BERT classifier (the teacher).

Flags mirror Google's run_classifier.py; see `bertdistill/cli/flags.py` for the common ones.

    python bert_finetune/run_classifier.py --task_name=sst-2 --do_train --do_eval \\
        --data_dir=../shared/data/sst2 --output_dir=outputs/teacher

Outputs in `--output_dir`: `checkpoints/` (resumable), `tensorboard/`, `best/`,
`eval_results.txt`, `test_results.tsv`, and `export/`: a self-contained folder (Hugging Face
files, SavedModel, ONNX, INT8 ONNX, labels) usable again as `--init_checkpoint`.
`--do_eval`/`--do_predict`/`--do_export` without `--do_train` use the model trained in
`--output_dir` (its best-by-dev weights, else its latest checkpoint), else a fine-tuned
`--init_checkpoint`; `--do_export` alone re-exports a finished run with the current exporter.
"""

from __future__ import annotations

from absl import flags

from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.tasks import runner
from bertdistill.tasks.finetune import FinetuneTask

script_flags.define_run_classifier_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    script_flags.validate_run_classifier_flags(FLAGS)
    runner.run(FinetuneTask(script_flags.finetune_config(FLAGS)))


if __name__ == "__main__":
    entry.run(main)
