"""Accuracy of export folders on perturbed copies of a labelled dev set (typos, dropped or
replaced words, casing, punctuation; `bertdistill/data/robustness.py`), with ONNX Runtime alone.

    python evaluate_robustness.py --input=../shared/data/sst2 \\
        --model_dir=teacher=outputs/teacher/export,lstm=outputs/lstm_distil/export \\
        --output=outputs/robustness.json --neighbours_model=outputs/teacher/export

`--model_dir` lists export folders, each `NAME=FOLDER` or a plain folder (named after its parent:
`outputs/teacher/export` is `teacher`). `--input` is a `sentence<TAB>label` TSV with a header, or
a GLUE SST-2 folder (its `dev.tsv`). Every model sees the same perturbed sentences (seeded by
`--seed`). `word_neighbour` needs a neighbour source, `--neighbours_model` (a BERT export or
Hugging Face folder: its input embeddings) or `--word_vectors`; without one it is skipped and
the output says so. Output (`--output`, written under a temporary name and renamed):

    {"seed": 12345, "input": ..., "rates": [0.1, 0.2],
     "models": {NAME: {"model_dir": ..., "precision": "float32" | "int8", "clean": 89.68, "examples": 872,
                       "perturbations": {name: {"0.1": {"accuracy": ..., "drop": ..., "changed": ...}}},
                       "skipped": {name: reason}}}}

Accuracies are percentages; `drop` is clean minus perturbed; `changed` the percent of sentences
the perturbation altered. A table of the same numbers is printed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found": not needed here

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from bertdistill import errors  # noqa: E402
from bertdistill.cli import entry  # noqa: E402

from bertdistill.data import data, robustness

from bertdistill.training import validation
from bertdistill.errors import ConfigError, DataError, FlagError, shorten  # noqa: E402
from bertdistill.files import atomic_output  # noqa: E402
from bertdistill.cli.shared_flags import define_flag  # noqa: E402
from bertdistill.export_format import HF_WEIGHTS, MODEL_FILES, VOCAB  # noqa: E402
from bertdistill.serving.predictor import Predictor  # noqa: E402

define_flag("model_dir", several="list", help="Export folders, comma-separated: NAME=FOLDER or FOLDER (named after its "
                  "parent folder).")
define_flag("input", help="A labelled TSV (header sentence<TAB>label) or a GLUE SST-2 folder (its dev.tsv).")
define_flag("output", help="The JSON results file.")
define_flag("seed", help="Seed of the perturbations (the same seed, the same perturbed sentences).")
flags.DEFINE_list("rates", [str(rate) for rate in robustness.DEFAULT_RATES],
                  "Perturbation rates in (0, 1]: the probability that each word is touched.")
flags.DEFINE_list("perturbations", None, f"A subset of {', '.join(robustness.PERTURBATIONS)} (default: all).")
define_flag("quantized", default=False, help="Evaluate the INT8 models (model.int8.onnx).")
flags.DEFINE_string("neighbours_model", None, "word_neighbour: a BERT export or Hugging Face folder whose input "
                    "embeddings give each word's nearest neighbours.")
define_flag("word_vectors", help="word_neighbour: a GloVe/word2vec text file instead of --neighbours_model.")
flags.DEFINE_integer("word_vectors_max_words", 200_000, "Read the first N vectors of --word_vectors.", lower_bound=1)
define_flag("threads")
define_flag("batch_size")
FLAGS = flags.FLAGS


def parse_models(items: list[str] | None, quantized: bool) -> dict[str, str]:
    """{name: export folder} from `--model_dir`, each folder checked."""
    validation.require("model_dir", items)
    models: dict[str, str] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep:
            folder = os.path.normpath(os.path.abspath(item))
            name = os.path.basename(os.path.dirname(folder)) or os.path.basename(folder) or item
            folder = item
        name, folder = name.strip(), folder.strip()
        if not name or not folder:
            raise FlagError("model_dir", f"--model_dir entry {shorten(repr(item), 80)}: expected NAME=FOLDER or FOLDER")
        if name in models:
            raise FlagError("model_dir", f"--model_dir names {shorten(repr(name), 60)} twice: give each folder its "
                                         "own NAME=FOLDER")
        validation.export_folder("model_dir", folder)
        model_file = MODEL_FILES["int8" if quantized else "float32"]
        if not os.path.isfile(os.path.join(folder, model_file)):
            raise FlagError("model_dir", f"--model_dir={shorten(folder)} has no {model_file}"
                                         + ("; drop --quantized or export with quantization" if quantized else ""))
        models[name] = folder
    return models


def parse_rates(values: list[str] | None) -> list[float]:
    validation.require("rates", values)
    rates = []
    for value in values:
        try:
            rate = float(value)
        except ValueError:
            raise FlagError("rates", f"--rates: {shorten(repr(value), 60)} is not a number") from None
        if not 0.0 < rate <= 1.0:
            raise FlagError("rates", f"--rates: {shorten(value, 60)} is outside (0, 1]; a rate is the probability "
                                     "that each word is touched")
        if rate in rates:
            raise FlagError("rates", f"--rates lists {value} twice")
        rates.append(rate)
    return rates


def parse_perturbations(values: list[str] | None) -> list[str]:
    if not values:
        return list(robustness.PERTURBATIONS)
    unknown = [value for value in values if value not in robustness.PERTURBATIONS]
    if unknown:
        raise FlagError("perturbations", f"--perturbations: unknown {', '.join(shorten(v, 60) for v in unknown)}; "
                                         f"known: {', '.join(robustness.PERTURBATIONS)}")
    return list(dict.fromkeys(values))


def check_input(path: str | None) -> None:
    validation.require("input", path)
    if not os.path.exists(path):
        raise FlagError("input", f"--input={shorten(path)} does not exist; expected a labelled TSV "
                                 "(sentence<TAB>label) or a GLUE SST-2 folder")
    if os.path.isdir(path):
        validation.split_files(path, ["dev"], "sst-2", name="input")


def check_neighbour_source(model_dir: str | None, word_vectors: str | None) -> None:
    if model_dir and word_vectors:
        raise FlagError("word_vectors", "--word_vectors and --neighbours_model are two neighbour sources: pass one")
    if word_vectors and not os.path.isfile(word_vectors):
        raise FlagError("word_vectors", f"--word_vectors={shorten(word_vectors)} is not a file")
    if model_dir:
        validation.model_path("neighbours_model", model_dir)
        if not os.path.isfile(os.path.join(model_dir, HF_WEIGHTS)) or not os.path.isfile(
                os.path.join(model_dir, VOCAB)):
            raise FlagError("neighbours_model", f"--neighbours_model={shorten(model_dir)} lacks {HF_WEIGHTS} or "
                                                f"{VOCAB}: pass a BERT export (bert_finetune, tinybert) or Hugging "
                                                "Face folder")


def read_examples(path: str, labels: list[str]) -> tuple[list[str], list[str]]:
    """Sentences and gold labels of `path` (a TSV, or a GLUE SST-2 folder's dev.tsv), checked against `labels`."""
    if os.path.isdir(path):
        processor = data.get_processor("sst-2")
        if processor.get_labels() != labels:
            raise ConfigError(f"the models' labels {labels} differ from SST-2's {processor.get_labels()}: pass "
                              "--input as a TSV file whose label column uses the models' labels")
        examples = processor.get_dev_examples(path)
        path = os.path.join(path, "dev.tsv")
    else:
        examples = data.TextClassificationProcessor(labels, "sentence", "label").read_file(path, "dev")
    validation.non_empty(examples, path)
    unlabelled = next((e.guid for e in examples if e.label is None), None)
    if unlabelled is not None:
        raise DataError(f"{shorten(path)} has no label column: expected a header with sentence and label")
    return [e.text_a for e in examples], [e.label for e in examples]


def label_predictor(predictor: Predictor):
    labels = np.asarray(predictor.labels)
    return lambda texts: labels[predictor.logits(texts).argmax(axis=1)]


def table(results: dict) -> str:
    """The results as text: per model, the clean accuracy, then accuracy (drop) per perturbation and rate."""
    rates = [str(rate) for rate in results["rates"]]
    width = max([len(name) for name in robustness.PERTURBATIONS] + [12])
    lines = []
    for name, model in results["models"].items():
        lines.append(f"{name} ({model['precision']}): clean {model['clean']:.2f} on {model['examples']} examples")
        lines.append("  " + "perturbation".ljust(width) + "".join(f"{'rate ' + rate:>18}" for rate in rates))
        for perturbation, by_rate in model["perturbations"].items():
            cells = "".join(f"{by_rate[rate]['accuracy']:.2f} ({by_rate[rate]['accuracy'] - model['clean']:+.2f})"
                            .rjust(18) for rate in rates)
            lines.append("  " + perturbation.ljust(width) + cells)
        for perturbation, reason in model["skipped"].items():
            lines.append("  " + perturbation.ljust(width) + f"  skipped: {reason}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {shorten(argv[1:], 120)}: pass the data with --input")
    models = parse_models(FLAGS.model_dir, FLAGS.quantized)
    check_input(FLAGS.input)
    rates = parse_rates(FLAGS.rates)
    names = parse_perturbations(FLAGS.perturbations)
    check_neighbour_source(FLAGS.neighbours_model, FLAGS.word_vectors)
    validation.require("output", FLAGS.output)
    validation.check_outputs({"output": FLAGS.output},
                             [FLAGS.input, *models.values(), FLAGS.neighbours_model, FLAGS.word_vectors])
    validation.writable_output("output", FLAGS.output, folder=False)
    validation.clean_file_debris(FLAGS.output)

    predictors = {name: Predictor(folder, quantized=FLAGS.quantized, threads=FLAGS.threads,
                                  batch_size=FLAGS.batch_size) for name, folder in models.items()}
    labels = next(iter(predictors.values())).labels
    for name, predictor in predictors.items():
        if sorted(predictor.labels) != sorted(labels):
            raise ConfigError(f"--model_dir: {name}'s labels {predictor.labels} differ from {labels}: the models "
                              "must share one label set")
    sentences, gold = read_examples(FLAGS.input, labels)
    neighbours = None
    if "word_neighbour" in names and (FLAGS.neighbours_model or FLAGS.word_vectors):
        try:
            neighbours = robustness.load_neighbours(model_dir=FLAGS.neighbours_model, word_vectors=FLAGS.word_vectors,
                                                    max_words=FLAGS.word_vectors_max_words)
        except errors.UserError:
            raise
        except ValueError as e:  # a malformed word-vector file (path:line)
            raise FlagError("word_vectors", f"--word_vectors: {shorten(str(e), 400)}") from None
        logging.info("word_neighbour: nearest neighbours in %s", FLAGS.neighbours_model or FLAGS.word_vectors)
    elif "word_neighbour" in names:
        logging.warning("word_neighbour is skipped: pass --neighbours_model or --word_vectors")

    results = {"seed": FLAGS.seed, "input": FLAGS.input, "rates": rates, "models": {}}
    for name, predictor in predictors.items():
        start = time.perf_counter()
        evaluated = robustness.evaluate(label_predictor(predictor), sentences, gold, seed=FLAGS.seed, rates=rates,
                                        names=names, neighbours=neighbours)
        results["models"][name] = {"model_dir": models[name], "precision": predictor.precision, **evaluated}
        logging.info("%s: %d examples x %d perturbed copies in %.1fs", name, len(sentences),
                     len(evaluated["perturbations"]) * len(rates), time.perf_counter() - start)
    with atomic_output(FLAGS.output) as out:
        json.dump(results, out, indent=2)
        out.write("\n")
    print(table(results))
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
    entry.run(main)
