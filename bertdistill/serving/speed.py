"""Inference speed of export folders from raw text (tokenization included), measured fairly:
every model in the same process, interleaved round by round, the median of the rounds.

Single-sentence latency: one text per call, the median over `latency_texts` calls. Throughput:
examples/s over the texts in input order, batches of `batch_size` (as the ONNX Runtime peer
does: `../shared/bench/peer_ort_bench.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Logits = Callable[[list[str]], np.ndarray]


def latency_ms(logits: Logits, texts: Sequence[str]) -> float:
    """Median milliseconds of one call per text."""
    times = []
    for text in texts:
        start = time.perf_counter()
        logits([text])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def throughput(logits: Logits, texts: Sequence[str], batch_size: int = 64) -> float:
    """Examples per second over `texts` in input order, `batch_size` per call."""
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        logits(list(texts[i:i + batch_size]))
    return len(texts) / (time.perf_counter() - start)


def compare(models: Mapping[str, Logits], texts: Sequence[str], *, rounds: int = 3, latency_texts: int = 200,
            batch_size: int = 64, warmup: int = 10) -> dict[str, dict[str, float]]:
    """`{name: {"latency_ms", "examples_per_s"}}`: each round times every model once (latency on
    the first `latency_texts` texts, then throughput on all); the medians over `rounds`."""
    if rounds < 1 or not texts:
        raise ValueError("compare needs at least one round and one text")
    for logits in models.values():
        for text in texts[:warmup]:
            logits([text])
    runs: dict[str, dict[str, list[float]]] = {name: {"latency_ms": [], "examples_per_s": []} for name in models}
    for _ in range(rounds):
        for name, logits in models.items():
            runs[name]["latency_ms"].append(latency_ms(logits, texts[:latency_texts]))
            runs[name]["examples_per_s"].append(throughput(logits, texts, batch_size))
    return {name: {key: float(np.median(values)) for key, values in measured.items()}
            for name, measured in runs.items()}
