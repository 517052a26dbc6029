"""The INT8 gate of an export folder: `model.int8.onnx` becomes the recommended serving model only
if it keeps accuracy (its dev accuracy at most `max_drop` points below `model.onnx`'s) and it is
faster than `model.onnx`.

    from bertdistill.export.int8_gate import run_int8_gate
    gate = run_int8_gate("outputs/teacher/export", texts, labels, max_drop=0.5)

Both models answer the raw dev texts (or sentence pairs) through `bertdistill.serving.predictor.Predictor`, then are timed on
the same texts in one process, interleaved round by round (`bertdistill.serving.speed.compare`):
single-sentence latency (median ms) and batch throughput (examples/s). INT8 counts as faster
when it wins on both. The verdict, both accuracies, both timings and the reason go into the
folder's `export_info.json` under `int8_gate` (rewritten atomically), where `Predictor`,
`predict.py` and `serve.py` find the recommended file. No TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from absl import logging

from bertdistill.serving import speed
from bertdistill.export_format import (DEFAULT_INT8_MAX_DROP, INT8_GATE, MODEL_FILES, load_export_info,
                                       write_export_info)
from bertdistill.metrics import accuracy, percent
from bertdistill.serving.predictor import Predictor

LATENCY_SENTENCES = 100
SPEED_ROUNDS = 3
SPEED_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One model of the folder on the dev texts."""

    accuracy: float  # percent
    latency_ms: float  # median, one sentence a call
    examples_per_s: float  # batches of SPEED_BATCH_SIZE


Texts = Sequence[str] | Sequence[tuple[str, str]]  # texts, or (text, text_b) pairs for a pair model
Measure = Callable[[str, Texts, Sequence[str], int], dict[str, Measurement]]


def dev_accuracy(predictor: Predictor, texts: Texts, labels: Sequence[str]) -> float:
    """Accuracy in percent (`metrics.percent`) of `predictor` on `texts` (labels compared as strings)."""
    predicted = predictor.to_predictions(predictor.logits_of(texts))
    return percent(accuracy([p.label for p in predicted], [str(gold) for gold in labels]))


def measure_models(folder: str, texts: Texts, labels: Sequence[str], threads: int) -> dict[str, Measurement]:
    """`{"float32": ..., "int8": ...}`: each ONNX model's accuracy on `texts`, and both timed on
    them together (interleaved rounds, medians)."""
    predictors = {precision: Predictor(folder, quantized=precision == "int8", threads=threads)
                  for precision in MODEL_FILES}
    timed = speed.compare({precision: predictor.logits_of for precision, predictor in predictors.items()}, texts,
                          rounds=SPEED_ROUNDS, latency_texts=LATENCY_SENTENCES, batch_size=SPEED_BATCH_SIZE)
    return {precision: Measurement(dev_accuracy(predictor, texts, labels), **timed[precision])
            for precision, predictor in predictors.items()}


def gate_verdict(float32: Measurement, int8: Measurement, max_drop: float) -> dict:
    """The gate's record: both measurements, whether INT8 keeps accuracy and is faster, the
    recommended file and the reason."""
    drop = float32.accuracy - int8.accuracy
    accuracy_kept = drop <= max_drop
    faster = int8.latency_ms < float32.latency_ms and int8.examples_per_s > float32.examples_per_s
    timings = (f"{int8.latency_ms:.2f} vs {float32.latency_ms:.2f} ms a sentence, "
               f"{int8.examples_per_s:.0f} vs {float32.examples_per_s:.0f} examples/s")
    if accuracy_kept and faster:
        reason = f"INT8 keeps accuracy (drop {drop:.2f} <= {max_drop} points) and is faster ({timings})"
    else:
        reason = "; ".join(([] if accuracy_kept else [f"INT8 loses {drop:.2f} points (> {max_drop})"])
                           + ([] if faster else [f"INT8 is not faster ({timings})"]))
    passed = accuracy_kept and faster
    return {"float32_accuracy": float32.accuracy, "int8_accuracy": int8.accuracy, "drop": drop, "max_drop": max_drop,
            "accuracy_kept": accuracy_kept, "float32_latency_ms": float32.latency_ms,
            "int8_latency_ms": int8.latency_ms, "float32_examples_per_s": float32.examples_per_s,
            "int8_examples_per_s": int8.examples_per_s, "faster": faster, "passed": passed, "reason": reason,
            "recommended": MODEL_FILES["int8" if passed else "float32"]}


def write_gate(folder: str, gate: dict) -> None:
    """Sets `int8_gate` in the folder's export_info.json (atomically)."""
    write_export_info(folder, {**load_export_info(folder), INT8_GATE: gate})


def run_int8_gate(folder: str, texts: Texts, labels: Sequence[str], *,
                  max_drop: float = DEFAULT_INT8_MAX_DROP,
                  threads: int = 0, measure: Measure = measure_models) -> dict:
    """Measures both ONNX models of `folder` on `texts` / `labels` (the dev set) with `measure`,
    records the verdict in export_info.json and returns it."""
    if not texts or len(texts) != len(labels):
        raise ValueError(f"the INT8 gate needs texts with one label each, got {len(texts)} texts and "
                         f"{len(labels)} labels")
    measured = measure(folder, texts, labels, threads)
    gate = {**gate_verdict(measured["float32"], measured["int8"], max_drop), "examples": len(texts),
            "speed": {"rounds": SPEED_ROUNDS, "latency_texts": min(LATENCY_SENTENCES, len(texts)),
                      "batch_size": SPEED_BATCH_SIZE},
            "quantization": load_export_info(folder).get("int8_quantization")}
    write_gate(folder, gate)
    logging.info("INT8 gate %s: recommended %s; %s (dev accuracy float32 %.2f, INT8 %.2f)",
                 "passed" if gate["passed"] else "failed", gate["recommended"], gate["reason"],
                 gate["float32_accuracy"], gate["int8_accuracy"])
    return gate


def run_int8_gate_on_examples(folder: str, examples: Sequence, *,
                              max_drop: float = DEFAULT_INT8_MAX_DROP) -> dict:
    """`run_int8_gate` on a task's dev `InputExample`s (texts or sentence pairs)."""
    texts = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]
    return run_int8_gate(folder, texts, [e.label for e in examples], max_drop=max_drop)
