"""The INT8 parity gate of an export folder: `model.int8.onnx` becomes the recommended serving
model only if its dev accuracy is at most `max_drop` points below `model.onnx`'s.

    from bertdistill.int8_gate import run_int8_gate
    gate = run_int8_gate("outputs/teacher/export", texts, labels, max_drop=0.5)

Both models answer the raw dev texts through `bertdistill.predictor.Predictor`; the verdict, both
accuracies (percent) and single-sentence latencies (median ms) go into the folder's `export_info.json` under
`int8_gate` (rewritten atomically), where `Predictor`, `predict.py` and `serve.py` find the
recommended file. No TensorFlow is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import logging

from bertdistill import robustness, speed
from bertdistill.files import atomic_output
from bertdistill.predictor import EXPORT_INFO, MODEL_FILES, Predictor, read_export_info

DEFAULT_MAX_DROP = 0.5
LATENCY_SENTENCES = 100


def accuracy(predictor: Predictor, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Percent of `texts` whose predicted label is the gold one (labels compared as strings)."""
    return robustness.accuracy([p.label for p in predictor.predict(texts)], [str(gold) for gold in labels])


def evaluate(folder: str, quantized: bool, texts: Sequence[str], labels: Sequence[str],
             threads: int) -> tuple[float, float]:
    """(dev accuracy in percent, single-sentence latency in ms) of one of the folder's models."""
    predictor = Predictor(folder, quantized=quantized, threads=threads)
    for text in texts[:5]:
        predictor.run([text])  # warm-up
    return accuracy(predictor, texts, labels), speed.latency_ms(predictor.logits, texts[:LATENCY_SENTENCES])


def gate_verdict(float32_accuracy: float, int8_accuracy: float, max_drop: float) -> dict:
    """The gate's decision from the two accuracies (percent)."""
    drop = float32_accuracy - int8_accuracy
    passed = drop <= max_drop
    return {"float32_accuracy": float32_accuracy, "int8_accuracy": int8_accuracy, "drop": drop, "max_drop": max_drop,
            "passed": passed, "recommended": MODEL_FILES["int8" if passed else "float32"]}


def write_gate(folder: str, gate: dict) -> None:
    """Sets `int8_gate` in the folder's export_info.json (atomically)."""
    info = read_export_info(folder)
    with atomic_output(os.path.join(folder, EXPORT_INFO)) as out:
        json.dump({**info, "int8_gate": gate}, out, indent=2)


def run_int8_gate(folder: str, texts: Sequence[str], labels: Sequence[str], *, max_drop: float = DEFAULT_MAX_DROP,
                  threads: int = 0) -> dict:
    """Evaluates both ONNX models of `folder` on `texts` / `labels` (the dev set), records the
    verdict in export_info.json and returns it."""
    if not texts or len(texts) != len(labels):
        raise ValueError(f"the INT8 gate needs texts with one label each, got {len(texts)} texts and "
                         f"{len(labels)} labels")
    float32_accuracy, float32_latency = evaluate(folder, False, texts, labels, threads)
    int8_accuracy, int8_latency = evaluate(folder, True, texts, labels, threads)
    gate = {**gate_verdict(float32_accuracy, int8_accuracy, max_drop), "float32_latency_ms": float32_latency,
            "int8_latency_ms": int8_latency, "examples": len(texts),
            "quantization": read_export_info(folder).get("int8_quantization")}
    write_gate(folder, gate)
    logging.info("INT8 gate %s: dev accuracy float32 %.2f, INT8 %.2f (drop %.2f, max %.2f); latency %.2f -> %.2f ms; "
                 "recommended %s", "passed" if gate["passed"] else "failed", float32_accuracy, int8_accuracy,
                 gate["drop"], max_drop, float32_latency, int8_latency, gate["recommended"])
    return gate


def run_int8_gate_on_examples(folder: str, examples: Sequence, *, max_drop: float = DEFAULT_MAX_DROP) -> dict | None:
    """`run_int8_gate` on a task's dev `InputExample`s; None (and a log line) for sentence pairs,
    which the predictor does not encode."""
    if any(example.text_b for example in examples):
        logging.info("INT8 gate skipped: the predictor answers single texts, this task has sentence pairs")
        return None
    return run_int8_gate(folder, [e.text_a for e in examples], [e.label for e in examples], max_drop=max_drop)
