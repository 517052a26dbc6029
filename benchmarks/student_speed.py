"""Students against their teacher in the same runtime (ONNX Runtime, CPU): parameters, size on
disk, single-sentence latency (tokenization included) and batch-64 throughput on SST-2 dev.
With `--bert_base_reference`, also times an untrained BERT-base-shaped model (12 layers,
768 wide) on the teacher's tokenizer: the size of teacher a 50x latency target usually assumes.

    python benchmarks/student_speed.py --teacher_dir outputs/teacher/export \\
        --students bilstm=outputs/lstm_distil/export,tinybert=outputs/tinybert/export

Each student is an export folder of distil_lstm (BiLSTM: its word vocabulary) or of a BERT
model (run_classifier, tinybert: WordPiece), chosen from its `export_info.json`.
"""

import json
import os

import numpy as np
from absl import app, flags

from bertdistill.cli.shared_flags import define_flag
from bertdistill.data import data

from bertdistill.export import export

from bertdistill.serving import speed
from bertdistill.export_format import (BERT_KINDS, CONFIG, HF_WEIGHTS, MODEL, MODEL_FILES, TOKENIZER_CONFIG, VOCAB,
                                       OnnxModel, load_export_info)
from bertdistill.metrics import accuracy
from bertdistill.serving.predictor import WordPieceEncoder
from distil_lstm.predict import TextClassifier

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
define_flag("data_dir", default=os.path.join(SHARED, "data", "sst2"), help="GLUE SST-2 folder.")
flags.DEFINE_string("teacher_dir", None, "Teacher export folder (bert_finetune).")
flags.DEFINE_list("students", None, "NAME=EXPORT_FOLDER of each student (BiLSTM or BERT).")
flags.DEFINE_integer("latency_sentences", 300, "Dev sentences timed one at a time.")
define_flag("threads")
flags.DEFINE_bool("bert_base_reference", False, "Also time an untrained BERT-base-shaped teacher (speed only).")
FLAGS = flags.FLAGS


class TeacherText:
    """Raw text -> logits with the teacher's WordPiece encoding (128 tokens at most) and an ONNX
    model, one ONNX Runtime call per call, its threads spinning between calls."""

    def __init__(self, folder: str, onnx_path: str):
        with open(os.path.join(folder, TOKENIZER_CONFIG), encoding="utf-8") as f:
            self.encoder = WordPieceEncoder(os.path.join(folder, VOCAB), json.load(f)["do_lower_case"], 128)
        self.model = OnnxModel(onnx_path, FLAGS.threads, spin_wait=True)

    def logits(self, texts):
        return self.model.predict(self.encoder.features(self.encoder.encode(texts)))


def measure(model, texts, labels) -> dict:
    """Accuracy, median/mean single-sentence latency (ms) and batch-64 examples/s, input order."""
    for text in texts[:20]:
        model.logits([text])  # warm-up
    predictions = np.concatenate([model.logits(texts[i:i + 64]).argmax(1) for i in range(0, len(texts), 64)])
    return {"dev_accuracy": accuracy(predictions, labels),
            "latency_ms_median": speed.latency_ms(model.logits, texts[:FLAGS.latency_sentences]),
            "batch64_examples_per_s": speed.throughput(model.logits, texts, 64)}


def size_mb(path: str) -> float:
    return os.path.getsize(path) / 2**20


def bert_base_reference(teacher_dir: str, texts: list[str], labels: np.ndarray) -> dict:
    """Speed and size of an untrained BERT-base-shaped classifier with the teacher's vocabulary."""
    import tempfile

    from bertdistill.models.bert import BertClassifier, BertConfig, BertEncoder

    with open(os.path.join(teacher_dir, CONFIG), encoding="utf-8") as f:
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


def parameters_of(folder: str) -> int:
    count = load_export_info(folder).get("parameters")
    if count is None:
        from safetensors.numpy import load_file
        count = sum(a.size for a in load_file(os.path.join(folder, HF_WEIGHTS)).values())
    return int(count)


def text_model(folder: str, model_file: str):
    """Raw text -> logits for an export folder: the BiLSTM's words or a BERT's WordPiece."""
    if load_export_info(folder).get(MODEL) not in BERT_KINDS:  # the BiLSTM
        return TextClassifier(folder, quantized=model_file == MODEL_FILES["int8"], intra_op_threads=FLAGS.threads)
    return TeacherText(folder, os.path.join(folder, model_file))


def main(argv):
    del argv
    dev = data.Sst2Processor().get_dev_examples(FLAGS.data_dir)
    texts, labels = [e.text_a for e in dev], np.array([int(e.label) for e in dev])
    folders = {"teacher": FLAGS.teacher_dir, **dict(item.split("=", 1) for item in FLAGS.students or [])}
    results = {}
    for name, folder in folders.items():
        for precision, model_file in MODEL_FILES.items():
            key = f"{name}{'_int8' if precision == 'int8' else ''}"
            results[key] = {"parameters": parameters_of(folder), "onnx_mb": size_mb(os.path.join(folder, model_file)),
                            **measure(text_model(folder, model_file), texts, labels)}
            print(key, json.dumps(results[key]), flush=True)
    for name in folders:
        for suffix in ("", "_int8"):
            if name != "teacher":
                results[f"speedup_{name}{suffix}"] = ratios(results[f"teacher{suffix}"], results[f"{name}{suffix}"])
    if FLAGS.bert_base_reference:
        results["bert_base_untrained"] = bert_base_reference(FLAGS.teacher_dir, texts, labels)
        for name in folders:
            for suffix in ("", "_int8"):
                if name != "teacher":
                    results[f"speedup_{name}_vs_bert_base{suffix}"] = ratios(results["bert_base_untrained"],
                                                                             results[f"{name}{suffix}"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
