"""The flags several scripts take, each defined here once: its type, default, bounds and help.

A script defines one with `define_flag(name)`; where its use differs it may give its own help, a
different default (`None`: a preset's value) or, for a flag that can take several values,
`several="list"` (comma-separated) or `several="repeated"` (the flag given once per value).
`tests/test_flags.py` checks no flag name is defined anywhere else twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from absl import flags

from bertdistill.configs import PRECISIONS
from bertdistill.export_format import DEFAULT_INT8_MAX_DROP, INT8_KEEP_FLOAT, INT8_LAYER_NAMES
from bertdistill.serving.predictor import DEFAULT_BATCH_SIZE
from bertdistill.training.validation import SEED_BOUNDS


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One flag's definition: the absl `DEFINE_*` function, default, help and its bounds or enum
    values; `several`: whether a script may take several values of it (strings only)."""

    define: Callable[..., object]
    default: object
    help: str
    options: dict[str, object] = dataclasses.field(default_factory=dict)
    several: bool = False


_STRING, _INT, _FLOAT, _BOOL = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool

SHARED_FLAGS: dict[str, FlagSpec] = {
    # A run's folders and seed
    "output_dir": FlagSpec(_STRING, None, "Checkpoints, TensorBoard logs, results and exports."),
    "overwrite_output_dir": FlagSpec(_BOOL, False, "Delete what --output_dir holds and start over."),
    "seed": FlagSpec(_INT, 12345, "Random seed: initialisation, dropout, data order.", SEED_BOUNDS),
    # Data
    "data_dir": FlagSpec(_STRING, None, "Folder with the task's train/dev/test files (SST-2: tfds when unset)."),
    "input": FlagSpec(_STRING, None, "The input file or folder."),
    "output": FlagSpec(_STRING, None, "The file to write (atomically: a temporary file renamed at the end)."),
    "augmented_file": FlagSpec(_STRING, None, "Training TSV with the teacher's logits (generate_dataset.py) or "
                               "augmented sentences (tinybert/data_augmentation.py)."),
    "augment_factor": FlagSpec(_INT, 20, "Augmentation attempts per original sentence."),
    "has_header": FlagSpec(_BOOL, True, "The files start with a header line."),
    "delimiter": FlagSpec(_STRING, None, "Field delimiter (default: tab, comma for .csv)."),
    "text_b_column": FlagSpec(_STRING, None, "Column of the second text of a pair (a header name, or a 0-based "
                              "index without a header)."),
    "word_vectors": FlagSpec(_STRING, None, "A GloVe/word2vec text file."),
    # Models
    "init_checkpoint": FlagSpec(_STRING, None, "A pretrained start: a short name (minilm, mpnet), Google TF "
                                "checkpoint prefix, Hugging Face folder or export folder (default: minilm)."),
    "bert_config_file": FlagSpec(_STRING, None, "bert_config.json of a Google checkpoint."),
    "vocab_file": FlagSpec(_STRING, None, "WordPiece vocab.txt (default: the checkpoint's)."),
    "mixed_precision": FlagSpec(flags.DEFINE_enum, "float32", "Precision policy: mixed_bfloat16 on CPU/TPU, "
                                "mixed_float16 on GPU.", {"enum_values": list(PRECISIONS)}),
    "max_seq_length": FlagSpec(_INT, 128, "Maximum tokens per example (after tokenization)."),
    "model_dir": FlagSpec(_STRING, None, "An export folder (<output_dir>/export of bert_finetune, tinybert or "
                          "distil_lstm).", several=True),
    "teacher_model": FlagSpec(_STRING, None, "The teacher: an export folder of run_classifier.py."),
    "student_config": FlagSpec(_STRING, None, "The student's bert_config.json / config.json (layers, hidden size, "
                               "heads, intermediate size)."),
    "student_init": FlagSpec(flags.DEFINE_enum, "teacher_layers", "Start of a --student_config student: the "
                             "teacher's embeddings and mapped layers (same width), or random.",
                             {"enum_values": ["teacher_layers", "random"]}),
    "layer_map": FlagSpec(_STRING, "uniform", "Layer map: uniform, last, skip (a rule; uniform:hidden keeps "
                          "the hidden-state matches alone), or a JSON file of matches."),
    "top_k": FlagSpec(_INT, 15, "Candidate words per word (TinyBERT's M)."),
    # Distillation
    "temperature": FlagSpec(_FLOAT, 1.0, "Softmax temperature of the distillation loss."),
    "intermediate_epochs": FlagSpec(_FLOAT, 10.0, "TinyBERT stage 1 epochs."),
    "prediction_epochs": FlagSpec(_FLOAT, 3.0, "TinyBERT stage 2 epochs."),
    "intermediate_max_examples": FlagSpec(_INT, None, "TinyBERT stage 1 on a seeded random subset of this many "
                                          "training examples (time budget); stage 2 uses them all."),
    # Export and serving
    "do_export": FlagSpec(_BOOL, True, "After training, write <output_dir>/export (SavedModel, ONNX, INT8)."),
    "int8_keep_float": FlagSpec(_STRING, INT8_KEEP_FLOAT, "The weight MatMuls the INT8 model (model.int8.onnx) "
                                "keeps in float32: comma-separated parts, each ffn_outputs:N (the feed-forward "
                                f"output projections of the first N layers), a layer name ({', '.join(INT8_LAYER_NAMES)})"
                                " or none."),
    "int8_max_drop": FlagSpec(_FLOAT, DEFAULT_INT8_MAX_DROP, "After the export: model.int8.onnx is the "
                              "recommended serving model only if its dev accuracy is at most this many points "
                              "below model.onnx's."),
    "quantized": FlagSpec(_BOOL, None, "Use the INT8 model (model.int8.onnx); --noquantized: the float32 one "
                          "(model.onnx); default: the one the export's INT8 gate recommends (model.onnx without a "
                          "gate)."),
    "threads": FlagSpec(_INT, 0, "ONNX Runtime intra-op threads (0: all cores).", {"lower_bound": 0}),
    "batch_size": FlagSpec(_INT, DEFAULT_BATCH_SIZE, "Texts per ONNX Runtime call.", {"lower_bound": 1}),
    "max_batch_size": FlagSpec(_INT, 32, "Instances per batched model call (also the predictor's batch size).",
                               {"lower_bound": 1}),
    "batch_timeout_ms": FlagSpec(_FLOAT, 2.0, "How long a batch waits for more requests after its first.",
                                 {"lower_bound": 0}),
}

SEVERAL_FORMS = {"list": flags.DEFINE_list, "repeated": flags.DEFINE_multi_string}
_UNSET = object()


def define_flag(name: str, flag_values: flags.FlagValues = flags.FLAGS, *, help: str | None = None,
                default: object = _UNSET, several: str | None = None, **options: object) -> None:
    """Defines the shared flag `name` on `flag_values`: the catalogue's definition, with this
    script's own `help`, `default` or bounds (`options`) where given; `several` ("list" or
    "repeated"): its several-values form. Safe to call twice."""
    if name in flag_values:
        return
    spec = SHARED_FLAGS[name]
    if several is not None and not spec.several:
        raise ValueError(f"flag --{name} takes one value")
    define = SEVERAL_FORMS[several] if several is not None else spec.define
    define(name, spec.default if default is _UNSET else default, help=help or spec.help,
           flag_values=flag_values, **{**spec.options, **options})
