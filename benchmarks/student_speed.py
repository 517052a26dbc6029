"""A student against its teacher in the same runtime (ONNX Runtime, CPU): parameters, size on
disk, single-sentence latency (tokenization included) and batch-64 throughput on SST-2 dev.
With `--bert_base_reference`, also times an untrained BERT-base-shaped model (12 layers,
768 wide) on the teacher's tokenizer: the size of teacher a 50x latency target usually assumes.

    python benchmarks/student_speed.py --teacher_dir outputs/teacher/export \\
        --student_dir outputs/lstm_distil/export
"""

import json
import os
import time

import numpy as np
from absl import app, flags

from bertdistill import data, export
from bertdistill.pipeline import pad_rows
from bertdistill.tokenization import Tokenizer
from distil_lstm.predict import TextClassifier

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
flags.DEFINE_string("data_dir", os.path.join(SHARED, "data", "sst2"), "GLUE SST-2 folder.")
flags.DEFINE_string("teacher_dir", None, "Teacher export folder (bert_finetune).")
flags.DEFINE_string("student_dir", None, "BiLSTM student export folder (distil_lstm).")
flags.DEFINE_integer("latency_sentences", 300, "Dev sentences timed one at a time.")
flags.DEFINE_integer("threads", 0, "ONNX Runtime intra-op threads (0: all cores).")
flags.DEFINE_bool("bert_base_reference", False, "Also time an untrained BERT-base-shaped teacher (speed only).")
FLAGS = flags.FLAGS


class TeacherText:
    """Raw text -> logits with the teacher's WordPiece tokenizer and ONNX model."""

    def __init__(self, folder: str, onnx_path: str):
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            self.tokenizer = Tokenizer(os.path.join(folder, "vocab.txt"), json.load(f)["do_lower_case"])
        self.model = export.OnnxClassifier(onnx_path, FLAGS.threads)

    def logits(self, texts):
        ids, types = self.tokenizer.encode_batch(texts, max_seq_length=128)
        input_ids = pad_rows(ids)
        return self.model.predict({"input_ids": input_ids, "attention_mask": (input_ids != 0).astype(np.int32),
                                   "token_type_ids": pad_rows(types)})


def measure(model, texts, labels) -> dict:
    """Accuracy, median/mean single-sentence latency (ms) and batch-64 examples/s, input order."""
    for text in texts[:20]:
        model.logits([text])  # warm-up
    latencies = []
    for text in texts[:FLAGS.latency_sentences]:
        start = time.perf_counter()
        model.logits([text])
        latencies.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    predictions = np.concatenate([model.logits(texts[i:i + 64]).argmax(1) for i in range(0, len(texts), 64)])
    seconds = time.perf_counter() - start
    return {"dev_accuracy": float((predictions == labels).mean()), "latency_ms_median": float(np.median(latencies)),
            "latency_ms_mean": float(np.mean(latencies)), "batch64_examples_per_s": len(texts) / seconds}


def size_mb(path: str) -> float:
    return os.path.getsize(path) / 2**20


def bert_base_reference(teacher_dir: str, texts: list[str], labels: np.ndarray) -> dict:
    """Speed and size of an untrained BERT-base-shaped classifier with the teacher's vocabulary."""
    import tempfile

    from bertdistill.bert import BertClassifier, BertConfig, BertEncoder

    with open(os.path.join(teacher_dir, "config.json"), encoding="utf-8") as f:
        model = BertClassifier(BertEncoder(BertConfig(vocab_size=json.load(f)["vocab_size"])), 2)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bert_base.onnx")
        export.export_onnx(model, path)
        result = {"parameters": model.count_params(), "onnx_mb": size_mb(path),
                  **measure(TeacherText(teacher_dir, path), texts, labels)}
    del result["dev_accuracy"]  # untrained: speed only
    return result


def ratios(teacher: dict, student: dict) -> dict:
    """How many times faster (latency, throughput), fewer parameters and smaller the student is."""
    return {"latency": teacher["latency_ms_median"] / student["latency_ms_median"],
            "batch64_throughput": student["batch64_examples_per_s"] / teacher["batch64_examples_per_s"],
            "parameters": teacher["parameters"] / student["parameters"],
            "size": teacher["onnx_mb"] / student["onnx_mb"]}


def main(argv):
    del argv
    dev = data.Sst2Processor().get_dev_examples(FLAGS.data_dir)
    texts, labels = [e.text_a for e in dev], np.array([int(e.label) for e in dev])
    with open(os.path.join(FLAGS.student_dir, "export_info.json"), encoding="utf-8") as f:
        student_parameters = json.load(f)["parameters"]
    from safetensors.numpy import load_file
    teacher_parameters = sum(a.size for a in load_file(os.path.join(FLAGS.teacher_dir, "model.safetensors")).values())
    results = {}
    for name, folder, parameters in (("teacher", FLAGS.teacher_dir, teacher_parameters),
                                     ("student", FLAGS.student_dir, student_parameters)):
        for model_file in ("model.onnx", "model.int8.onnx"):
            model = (TeacherText(folder, os.path.join(folder, model_file)) if name == "teacher"
                     else TextClassifier(folder, quantized=model_file == "model.int8.onnx",
                                         intra_op_threads=FLAGS.threads))
            key = f"{name}{'_int8' if 'int8' in model_file else ''}"
            results[key] = {"parameters": parameters, "onnx_mb": size_mb(os.path.join(folder, model_file)),
                            **measure(model, texts, labels)}
            print(key, json.dumps(results[key]), flush=True)
    for suffix in ("", "_int8"):
        results[f"speedup{suffix}"] = ratios(results[f"teacher{suffix}"], results[f"student{suffix}"])
    if FLAGS.bert_base_reference:
        results["bert_base_untrained"] = bert_base_reference(FLAGS.teacher_dir, texts, labels)
        for suffix in ("", "_int8"):
            results[f"speedup_vs_bert_base{suffix}"] = ratios(results["bert_base_untrained"],
                                                              results[f"student{suffix}"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
