"""Teacher speed on SST-2, side by side with the peer benchmarks.

Measures Keras training examples/s (batch 32, length-bucketed real train batches) for each
precision/XLA setting, and dev-set inference examples/s (batch 64) and single-sentence
latency (tokenization included) of the exported ONNX model; then runs
`../shared/bench/peer_hf_bench.py` with `--peer_python` on the same machine, right after.

`--peer_ort` compares inference alone with `../shared/bench/peer_ort_bench.py` (the same model
exported from PyTorch, run in ONNX Runtime) on its protocol: SST-2 dev in input order, batches
of 64 padded to their longest sentence, tokenization included, then 200 single sentences;
`--rounds` alternates peer and ours on the same machine and reports each round's ratio.

    python benchmarks/teacher_speed.py --export_dir outputs/teacher/export --peer_python PEER_VENV/bin/python
    python benchmarks/teacher_speed.py --init_checkpoint=mpnet --peer_python PEER_VENV/bin/python   # the large teacher
    python benchmarks/teacher_speed.py --export_dir outputs/teacher/export --peer_python PEER_VENV/bin/python \
        --peer_ort --rounds=3 [--onnx_threads=1]
"""

import json
import os
import re
import subprocess
import time

import numpy as np
from absl import app, flags

from bertdistill.cli.shared_flags import define_flag
from bertdistill.data import data, pipeline

from bertdistill.export import export

from bertdistill.models import checkpoints, model_packages

from bertdistill.training import optimization, trainer
from bertdistill.training.distribute import set_precision_policy
from bertdistill.export_format import MODEL_FILES, VOCAB, OnnxModel, attention_mask, pad
from bertdistill.models.bert import BertClassifier
from bertdistill.models.encoders import build_encoder
from bertdistill.data.tokenization import Tokenizer

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
define_flag("data_dir", default=os.path.join(SHARED, "data", "sst2"), help="GLUE SST-2 folder.")
flags.DEFINE_string("export_dir", None, "Teacher export folder for ONNX inference (default: export the "
                                        "offline default model to a temp folder).")
flags.DEFINE_list("settings", ["float32", "mixed_bfloat16"],
                  "Training settings to time: precision[+xla]. XLA recompiles for every new batch length, "
                  "so with dynamic padding it only pays off over long runs.")
flags.DEFINE_integer("train_steps", 60, "Timed training steps per setting (after 10 warm-up steps).")
flags.DEFINE_string("peer_python", None, "Python of a venv with torch + transformers for the peer benchmark.")
flags.DEFINE_bool("peer_ort", False, "Inference only, against peer_ort_bench.py (needs --export_dir, --peer_python).")
flags.DEFINE_integer("rounds", 3, "--peer_ort: peer and ours alternate this many times.", lower_bound=1)
flags.DEFINE_integer("onnx_threads", 0, "--peer_ort: ONNX Runtime intra-op threads on our side (0: all cores, "
                     "the peer's setting).", lower_bound=0)
flags.DEFINE_bool("onnx_spinning", True, "--peer_ort: let our ONNX Runtime threads spin (the peer's setting).")
FLAGS = flags.FLAGS
define_flag("init_checkpoint", default="minilm", help="The model timed: a short name (minilm, mpnet) or a Hugging Face "
                    "folder; the peers get the same folder.")


def train_throughput(setting: str, features) -> float:
    """Examples/s of the project's trainer on bucketed SST-2 batches of 32 for one precision[+xla] setting."""
    import tempfile

    import keras
    import tensorflow as tf

    precision, _, xla = setting.partition("+")
    set_precision_policy(precision)
    pretrained = checkpoints.resolve_pretrained(FLAGS.init_checkpoint)
    model = BertClassifier(build_encoder(pretrained.config), 2)
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
    classifier = OnnxModel(os.path.join(export_dir, MODEL_FILES["float32"]), spin_wait=True)
    features = pipeline.convert_examples_to_features(dev, tokenizer, ["0", "1"], 128)
    by_length = sorted(range(len(dev)), key=lambda i: features.lengths[i])
    results = {}
    for name, order in (("input_order", range(len(dev))), ("length_sorted", by_length)):
        ids = [features.input_ids[i].numpy() for i in order]
        start = time.perf_counter()
        for first in range(0, len(ids), 64):
            rows = ids[first:first + 64]
            batch = pad(rows, tokenizer.pad_id)
            classifier.predict({"input_ids": batch, "attention_mask": attention_mask(rows),
                                "token_type_ids": np.zeros_like(batch)})
        results[f"onnx_dev_examples_per_s_{name}"] = len(dev) / (time.perf_counter() - start)
    start = time.perf_counter()
    for example in dev[:200]:
        ids, types = tokenizer.encode(example.text_a, max_seq_length=128)
        classifier.predict({"input_ids": [ids], "attention_mask": [[1] * len(ids)], "token_type_ids": [types]})
    results["onnx_single_latency_ms"] = (time.perf_counter() - start) / 200 * 1000
    return results


def peer_protocol(export_dir: str, texts: list[str], threads: int, spinning: bool) -> dict:
    """Our export on peer_ort_bench.py's protocol: the texts in input order, batches of 64 padded to
    their longest, tokenization included; then the first 200 one at a time."""
    model = OnnxModel(os.path.join(export_dir, MODEL_FILES["float32"]), threads, spin_wait=spinning)
    tokenizer = Tokenizer(os.path.join(export_dir, VOCAB))

    def run(batch: list[str]) -> None:
        rows = tokenizer.encode_batch(batch, None, 128)[0]
        ids = pad(rows, tokenizer.pad_id)
        model.predict({"input_ids": ids, "attention_mask": attention_mask(rows), "token_type_ids": np.zeros_like(ids)})

    run(texts[:64])
    start = time.perf_counter()
    for first in range(0, len(texts), 64):
        run(texts[first:first + 64])
    examples_per_s = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    for text in texts[:200]:
        run([text])
    return {"dev_infer_examples_per_s": examples_per_s,
            "single_latency_ms": (time.perf_counter() - start) / 200 * 1000}


def model_dir() -> str:
    """The Hugging Face folder of --init_checkpoint (what the peers load)."""
    return model_packages.resolve_short_name(FLAGS.init_checkpoint) or FLAGS.init_checkpoint


def peer_ort(out_dir: str) -> dict:
    """One run of ../shared/bench/peer_ort_bench.py (MiniLM exported from PyTorch) with --peer_python."""
    peer = subprocess.run([FLAGS.peer_python, os.path.join(SHARED, "bench", "peer_ort_bench.py"), model_dir(),
                           FLAGS.data_dir, out_dir], capture_output=True, text=True, check=True)
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", peer.stdout.strip().splitlines()[-1])}


def compare_with_peer_ort() -> dict:
    """`--rounds` alternations of the peer and ours; the ratios are ours / peer (latency: peer / ours)."""
    import tempfile

    texts = [e.text_a for e in data.Sst2Processor().get_dev_examples(FLAGS.data_dir)]
    rounds, out_dir = [], tempfile.mkdtemp()
    for _ in range(FLAGS.rounds):
        peer = peer_ort(out_dir)
        ours = peer_protocol(FLAGS.export_dir, texts, FLAGS.onnx_threads, FLAGS.onnx_spinning)
        rounds.append({"peer": peer, "ours": ours,
                       "throughput_ratio": ours["dev_infer_examples_per_s"] / peer["dev_infer_examples_per_s"],
                       "latency_ratio": peer["single_latency_ms"] / ours["single_latency_ms"]})
    return {"settings": {"onnx_threads": FLAGS.onnx_threads, "onnx_spinning": FLAGS.onnx_spinning},
            "rounds": rounds,
            "median_throughput_ratio": float(np.median([r["throughput_ratio"] for r in rounds])),
            "median_latency_ratio": float(np.median([r["latency_ratio"] for r in rounds]))}


def main(argv):
    del argv
    if FLAGS.peer_ort:
        if not (FLAGS.export_dir and FLAGS.peer_python):
            raise app.UsageError("--peer_ort needs --export_dir and --peer_python")
        print(json.dumps(compare_with_peer_ort(), indent=2))
        return
    processor = data.Sst2Processor()
    tokenizer = Tokenizer(os.path.join(model_dir(), VOCAB))
    train = processor.get_train_examples(FLAGS.data_dir)
    dev = processor.get_dev_examples(FLAGS.data_dir)
    features = pipeline.convert_examples_to_features(train[:20000], tokenizer, ["0", "1"], 128)
    results = {"train_examples_per_s": {s: train_throughput(s, features) for s in FLAGS.settings}}
    export_dir = FLAGS.export_dir
    if not export_dir:
        import tempfile
        export_dir = os.path.join(tempfile.mkdtemp(), "export")
        pretrained = checkpoints.resolve_pretrained(FLAGS.init_checkpoint)
        model = BertClassifier(build_encoder(pretrained.config), 2)
        checkpoints.restore_weights(model, pretrained)
        x, _ = next(iter(pipeline.make_dataset(features, batch_size=4, is_training=False)))
        export.export_folder(model, export_dir, sample={k: v.numpy() for k, v in x.items()}, info={},
                             quantize=False)
    results.update(onnx_inference(export_dir, tokenizer, dev))
    if FLAGS.peer_python:
        peer = subprocess.run([FLAGS.peer_python, os.path.join(SHARED, "bench", "peer_hf_bench.py"), model_dir(),
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
