"""Teacher ensembles on the dev set: each export's float32 accuracy, the accuracy of the mean of
the logits of every subset of two or more exports, and how many dev errors each pair shares
(correlated errors are what caps an ensemble). Not a test.

    python benchmarks/teacher_ensemble.py --data_dir ../shared/data/sst2 \
        --model_dir=outputs/ensemble/teacher_1/export,outputs/ensemble/teacher_2/export,...
"""

import itertools
import json
import os

import numpy as np
from absl import flags

from bertdistill.cli.shared_flags import define_flag
from bertdistill import errors
from bertdistill.cli import entry

from bertdistill.data import data
from bertdistill.files import atomic_output
from bertdistill.metrics import accuracy, percent
from bertdistill.serving.predictor import Predictor
from bertdistill.pipeline.report import label_indices

define_flag("data_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sst2"),
            help="Folder with the GLUE SST-2 dev.tsv.")
define_flag("model_dir", several="list", help="Two or more export folders of teachers with the same labels.",
            required=True)
define_flag("output", help="Optional JSON file for the results.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if len(FLAGS.model_dir) < 2:
        raise errors.FlagError("model_dir", "--model_dir needs two or more export folders")
    examples = data.Sst2Processor().get_dev_examples(FLAGS.data_dir)
    texts = [example.text_a for example in examples]
    predictors = {folder: Predictor(folder, quantized=False) for folder in FLAGS.model_dir}
    gold = {folder: label_indices(predictor, [e.label for e in examples]) for folder, predictor in predictors.items()}
    if any(not np.array_equal(gold[folder], gold[FLAGS.model_dir[0]]) for folder in FLAGS.model_dir):
        raise errors.FlagError("model_dir", "--model_dir: the exports order their labels differently")
    gold = gold[FLAGS.model_dir[0]]
    logits = {folder: predictor.logits(texts) for folder, predictor in predictors.items()}
    wrong = {folder: logits[folder].argmax(1) != gold for folder in logits}
    results = {"dev_examples": len(texts),
               "single": {folder: percent(accuracy(logits[folder].argmax(1), gold)) for folder in logits},
               "errors": {folder: int(wrong[folder].sum()) for folder in wrong},
               "shared_errors": {f"{a} & {b}": int((wrong[a] & wrong[b]).sum())
                                 for a, b in itertools.combinations(FLAGS.model_dir, 2)},
               "ensembles": {" + ".join(subset): percent(accuracy(
                   np.mean([logits[folder] for folder in subset], axis=0).argmax(1), gold))
                   for size in range(2, len(FLAGS.model_dir) + 1)
                   for subset in itertools.combinations(FLAGS.model_dir, size)}}
    print(json.dumps(results, indent=2))
    if FLAGS.output:
        with atomic_output(FLAGS.output) as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    entry.run(main)
