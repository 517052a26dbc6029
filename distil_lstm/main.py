"""The BiLSTM student: train on gold labels, distil from a teacher's logits, or test.

    python distil_lstm/main.py --mode=train  --data_dir=../shared/data/sst2 --output_dir=outputs/lstm
    python distil_lstm/main.py --mode=distil --data_dir=../shared/data/sst2 \\
        --augmented_file=outputs/augmented.tsv --output_dir=outputs/lstm_distil
    python distil_lstm/main.py --mode=test   --data_dir=../shared/data/sst2 --output_dir=outputs/lstm_distil

`train` fits on the task's train set; `distil` fits on a transfer set written by
`generate_dataset.py` (`<data_dir>/augmented.tsv` unless `--augmented_file`) with the loss
`--distill_loss` (see `bertdistill/distill/distill.py`). Both keep the best model by dev accuracy and write
`<output_dir>/export`: SavedModel, ONNX, INT8 ONNX, `vocab.txt`, `config.json`, `labels.json`
and Keras weights (see `distil_lstm/predict.py` for raw text -> label). `test` evaluates that
export folder (or `--model_dir`) on dev, or predicts the test set (`--eval_split=test`). The job
itself: `distil_lstm/task.py`.
"""

from __future__ import annotations

from absl import flags

from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.tasks import runner
from distil_lstm.task import BiLstmTask

script_flags.define_distil_lstm_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    script_flags.validate_distil_lstm_flags(FLAGS)
    runner.run(BiLstmTask(script_flags.bilstm_config(FLAGS)))


if __name__ == "__main__":
    entry.run(main)
