"""The results report of a pipeline run: every model's dev accuracy (float32 and INT8), size,
speed (all models in one process, interleaved, medians: `bertdistill/serving/speed.py`), robustness
(`bertdistill/data/robustness.py`) and training time, the teachers' seeds and their ensemble.

Writes `results.json` (every number, with the command and versions that made it),
`results.md` (the tables) and two matplotlib figures: `accuracy_vs_latency.png` and
`robustness.png`. For sentence pairs (the dev examples are (text, text_b) tuples) the robustness
section is skipped, with its reason: the perturbations rewrite single sentences.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Sequence

import numpy as np

from bertdistill import __version__

from bertdistill.data import robustness

from bertdistill.serving import speed
from bertdistill.files import atomic_output, atomic_path
from bertdistill.metrics import accuracy, percent
from bertdistill.export_format import INT8_GATE, MODEL_FILES
from bertdistill.serving.predictor import Predictor

PRECISIONS = ("float32", "int8")


@dataclasses.dataclass(frozen=True)
class ReportModel:
    """One trained model of the run: its export folder and how it was made."""
    name: str
    export_dir: str
    role: str  # "teacher", "student" or "reference" (a model of another run, for comparison)
    description: str
    train_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    speed_rounds: int = 3
    latency_texts: int = 200
    batch_size: int = 64
    robustness_examples: int | None = None  # None: the whole dev set
    robustness_rates: Sequence[float] = robustness.DEFAULT_RATES
    seed: int = 12345


def label_indices(predictor: Predictor, labels: Sequence[str]) -> np.ndarray:
    """Gold labels as indices of the model's label list."""
    index = {label: i for i, label in enumerate(predictor.labels)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise ValueError(f"{predictor.folder}: dev labels {unknown[:5]} are not among the model's {predictor.labels}")
    return np.array([index[label] for label in labels])


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max of per-seed results."""
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "runs": len(array)}


def export_size_mb(folder: str, precision: str) -> float:
    return os.path.getsize(os.path.join(folder, MODEL_FILES[precision])) / 2**20


def model_parameters(predictor: Predictor) -> int | None:
    count = predictor.info.get("parameters")
    return int(count) if count is not None else None


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name with its family and model numbers (from Linux's `cpuinfo`), else
    `platform.processor()`: speed, and bfloat16 results, depend on it."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            first = f.read().split("\n\n", 1)[0]  # the first processor's block
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    return (f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')})")


def versions() -> dict[str, str]:
    import onnxruntime
    import tensorflow as tf

    return {"bertdistill": __version__, "python": platform.python_version(), "tensorflow": tf.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_name()}"}


def build(models: Sequence[ReportModel], dev_texts: Sequence[str] | Sequence[tuple[str, str]],
          dev_labels: Sequence[str], *, settings: ReportSettings = ReportSettings(), neighbours=None,
          provenance: dict | None = None) -> dict:
    """Evaluates and times every model on the dev texts (or (text, text_b) pairs); returns the
    results (see module docstring)."""
    dev_texts = list(dev_texts)
    predictors = {}
    for model in models:
        for precision in PRECISIONS:
            if os.path.isfile(os.path.join(model.export_dir, MODEL_FILES[precision])):
                predictors[model.name, precision] = Predictor(model.export_dir, quantized=precision == "int8")
    results: dict = {"provenance": {**(provenance or {}), "versions": versions(),
                                    "settings": dataclasses.asdict(settings)},
                     "dev_examples": len(dev_texts), "models": {}}
    logits = {}
    for (name, precision), predictor in predictors.items():
        logits[name, precision] = predictor.logits_of(dev_texts)
    gold = {name: label_indices(predictors[name, "float32"], dev_labels) for name, _ in predictors}
    for model in models:
        entry = {"description": model.description, "role": model.role, "export_dir": model.export_dir,
                 "parameters": model_parameters(predictors[model.name, "float32"]),
                 "train_seconds": model.train_seconds,
                 "int8_gate": predictors[model.name, "float32"].info.get(INT8_GATE), "precisions": {}}
        for precision in PRECISIONS:
            if (model.name, precision) in predictors:
                entry["precisions"][precision] = {
                    "dev_accuracy": percent(accuracy(logits[model.name, precision].argmax(1), gold[model.name])),
                    "onnx_mb": export_size_mb(model.export_dir, precision)}
        results["models"][model.name] = entry
    teachers = [m.name for m in models if m.role == "teacher"]
    if len(teachers) > 1:
        mean_logits = np.mean([logits[name, "float32"] for name in teachers], axis=0)
        results["teachers"] = {
            "seeds": {name: results["models"][name]["precisions"]["float32"]["dev_accuracy"] for name in teachers},
            "summary": summarize([results["models"][n]["precisions"]["float32"]["dev_accuracy"] for n in teachers]),
            "ensemble_dev_accuracy": percent(accuracy(mean_logits.argmax(1), gold[teachers[0]]))}
    timed = speed.compare({f"{name}/{precision}": predictor.logits_of for (name, precision), predictor in predictors.items()},
                          dev_texts, rounds=settings.speed_rounds, latency_texts=settings.latency_texts,
                          batch_size=settings.batch_size)
    reference = timed.get(f"{teachers[0]}/float32") if teachers else None
    for (name, precision), measured in ((tuple(key.split("/")), value) for key, value in timed.items()):
        row = results["models"][name]["precisions"][precision]
        row.update({"latency_ms": measured["latency_ms"], f"batch{settings.batch_size}_examples_per_s":
                    measured["examples_per_s"]})
        if reference:
            row["speedup_latency"] = reference["latency_ms"] / measured["latency_ms"]
            row["speedup_throughput"] = measured["examples_per_s"] / reference["examples_per_s"]
    if teachers:
        results["speedup_reference"] = f"{teachers[0]}/float32"
    results["robustness"] = robustness_results(models, predictors, dev_texts, gold, settings, neighbours)
    return results


def robustness_results(models, predictors, dev_texts, gold, settings: ReportSettings, neighbours) -> dict:
    """Each float32 model on the same seeded perturbed copies of (a subset of) dev; skipped for pairs."""
    if dev_texts and isinstance(dev_texts[0], tuple):
        return {"skipped": "the perturbations rewrite single sentences; this task has sentence pairs", "models": {}}
    count = settings.robustness_examples or len(dev_texts)
    out = {"examples": min(count, len(dev_texts)), "seed": settings.seed, "rates": list(settings.robustness_rates),
           "models": {}}
    for model in models:
        predictor = predictors[model.name, "float32"]
        out["models"][model.name] = robustness.evaluate(
            lambda texts, p=predictor: p.logits(texts).argmax(1), dev_texts[:count], gold[model.name][:count],
            seed=settings.seed, rates=settings.robustness_rates, neighbours=neighbours)
    return out


def count(number: int | None) -> str:
    """17.4M, 23.5k or 812."""
    if number is None:
        return "-"
    return f"{number / 1e6:.1f}M" if number >= 1e6 else f"{number / 1e3:.1f}k" if number >= 1e3 else str(number)


def _cell(values: Sequence[float | None], pattern: str) -> str:
    return " / ".join("-" if value is None else pattern.format(value) for value in values)


def markdown(results: dict) -> str:
    """The report's tables as Markdown."""
    batch = results["provenance"]["settings"]["batch_size"]
    lines = [f"# Results ({results['dev_examples']} dev examples)", "",
             f"Speed: ONNX Runtime from raw text, all models in one process, interleaved, median of "
             f"{results['provenance']['settings']['speed_rounds']} rounds; speed-up over "
             f"`{results.get('speedup_reference', '-')}`. Cells with two values are float32 / INT8.", "",
             f"| model | dev acc | INT8 acc (gate) | params | ONNX MB | latency ms | batch-{batch} ex/s | "
             f"speed-up (latency) | robustness drop (mean) | train time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["models"].items():
        rows = [entry["precisions"].get(p, {}) for p in PRECISIONS]
        gate = entry.get("int8_gate") or {}
        verdict = {True: " kept", False: " refused"}.get(gate.get("passed"), "")
        perturbed = results["robustness"]["models"].get(name, {}).get("perturbations", {})
        drops = [value["drop"] for rates in perturbed.values() for value in rates.values()]
        train = entry.get("train_seconds")
        cells = [name, _cell([rows[0].get("dev_accuracy")], "{:.2f}"),
                 _cell([rows[1].get("dev_accuracy")], "{:.2f}") + verdict,
                 count(entry["parameters"]),
                 _cell([r.get("onnx_mb") for r in rows], "{:.1f}"), _cell([r.get("latency_ms") for r in rows], "{:.2f}"),
                 _cell([r.get(f"batch{batch}_examples_per_s") for r in rows], "{:.0f}"),
                 _cell([r.get("speedup_latency") for r in rows], "{:.2f}x"),
                 _cell([float(np.mean(drops)) if drops else None], "{:.2f}"),
                 _cell([None if train is None else train / 60], "{:.1f} min")]
        lines.append("| " + " | ".join(cells) + " |")
    if "teachers" in results:
        summary = results["teachers"]["summary"]
        lines += ["", f"Teachers: {', '.join(f'{k} {v:.2f}' for k, v in results['teachers']['seeds'].items())}; "
                      f"mean {summary['mean']:.2f} ± {summary['std']:.2f} (sample std over {summary['runs']} seeds); "
                      f"ensemble (mean logits) {results['teachers']['ensemble_dev_accuracy']:.2f}."]
    provenance = results["provenance"]
    if provenance.get("compare_with"):
        lines += ["", f"Rows `{os.path.basename(provenance['compare_with'])}:*` are the models of another run "
                      f"({provenance['compare_with']}), measured here in the same rounds."]
    if provenance.get("transfer_set_teachers"):
        lines += ["", f"The transfer set is labelled by {' + '.join(provenance['transfer_set_teachers'])}"
                      f"{' (mean logits)' if len(provenance['transfer_set_teachers']) > 1 else ''}."]
    for stage, reason in provenance.get("skipped_stages", {}).items():
        lines += ["", f"Stage {stage} skipped: {reason}."]
    if provenance.get("stages"):
        stages = provenance["stages"]
        lines += ["", "Wall time per stage (min): " + ", ".join(f"{name} {record['seconds'] / 60:.1f}"
                                                                 for name, record in stages.items())
                  + f"; total {sum(record['seconds'] for record in stages.values()) / 60:.1f} before the report."]
    lines += robustness_markdown(results["robustness"])
    return "\n".join(lines) + "\n"


def robustness_markdown(section: dict) -> list[str]:
    if "skipped" in section:
        return ["", f"Robustness: skipped ({section['skipped']})."]
    names = list(section["models"])
    keys = [(p, r) for p, rates in section["models"][names[0]]["perturbations"].items() for r in rates] if names else []
    lines = ["", f"## Robustness: dev accuracy drop from clean (points; {section['examples']} examples, seed "
                 f"{section['seed']})", "",
             "| model | clean | " + " | ".join(f"{p}@{r}" for p, r in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for name in names:
        entry = section["models"][name]
        lines.append(f"| {name} | {entry['clean']:.2f} | "
                     + " | ".join(f"{entry['perturbations'][p][r]['drop']:.2f}" for p, r in keys) + " |")
    skipped = {p: reason for entry in section["models"].values() for p, reason in entry.get("skipped", {}).items()}
    lines += ["", *[f"Skipped `{p}`: {reason}" for p, reason in skipped.items()]] if skipped else []
    return lines


def figures(results: dict, folder: str) -> list[str]:
    """accuracy_vs_latency.png and robustness.png in `folder`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    paths = [os.path.join(folder, "accuracy_vs_latency.png"), os.path.join(folder, "robustness.png")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(PRECISIONS, ("o", "s")))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4
    handles = []  # models named in a legend: labels by the points overlap where models are close
    for (name, entry), color in zip(results["models"].items(), colors):
        points = [(row["latency_ms"], row["dev_accuracy"], precision) for precision in PRECISIONS
                  if (row := entry["precisions"].get(precision)) and "latency_ms" in row]
        if len(points) > 1:  # one model's precisions joined
            ax.plot([p[0] for p in points], [p[1] for p in points], color=color, alpha=0.4, linestyle="--")
        for latency, dev_accuracy, precision in points:
            ax.scatter(latency, dev_accuracy, color=color, marker=markers[precision], zorder=3)
        if points:
            handles.append(Line2D([], [], color=color, marker="o", linestyle="", label=name))
    handles += [Line2D([], [], color="gray", marker=markers[p], linestyle="", label=p) for p in PRECISIONS]
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 1, 10 ms rather than 10^0
    # Minor ticks: only 2 and 5 (x 10^k) labelled; 0.6, 0.7, 0.8, 0.9 crowd each other.
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}".strip("0.")[:1] in
                                               ("2", "5") else ""))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("single-sentence latency, ms (log scale; ONNX Runtime, tokenization included)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title("Accuracy vs latency (up and to the left is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(paths[0]) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)

    section = results["robustness"]
    names = list(section["models"])
    if not names:
        return paths[:1]
    keys = [(p, r) for p, rates in section["models"][names[0]]["perturbations"].items() for r in rates]
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(keys) * len(names) / 2), 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        entry = section["models"][name]
        ax.bar(np.arange(len(keys) + 1) + i * width, [entry["clean"]] + [
            entry["perturbations"][p][r]["accuracy"] for p, r in keys], width, label=name)
    ax.set_xticks(np.arange(len(keys) + 1) + width * (len(names) - 1) / 2)
    ax.set_xticklabels(["clean"] + [f"{p}@{r}" for p, r in keys], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("dev accuracy (%)")
    low = min([e["clean"] for e in section["models"].values()] + [
        v["accuracy"] for e in section["models"].values() for rates in e["perturbations"].values() for v in rates.values()])
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.set_title("Accuracy under each perturbation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(paths[1]) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return paths


def write(results: dict, folder: str) -> list[str]:
    """results.json, results.md and the figures, each written whole or not at all."""
    os.makedirs(folder, exist_ok=True)
    with atomic_output(os.path.join(folder, "results.json")) as f:
        json.dump(results, f, indent=2)
    with atomic_output(os.path.join(folder, "results.md")) as f:
        f.write(markdown(results))
    return [os.path.join(folder, "results.json"), os.path.join(folder, "results.md"), *figures(results, folder)]
