"""The export folder format, in one place and without TensorFlow (nor Keras): its file names, the
`export_info.json` schema (reading and validating it), the models' inputs and outputs, padding,
and the one ONNX runner (`OnnxModel`).

An export folder holds `export_info.json` (what was exported and how, see
`bertdistill.export.export.export_folder`), `saved_model/` (TensorFlow Serving), `model.onnx` (ONNX
Runtime; for BERT models its optimized graph with `com.microsoft` operators), `model.int8.onnx`,
and a float32 ONNX graph with standard operators only, named by export_info's `onnx_portable`
(`model.portable.onnx` beside an optimized `model.onnx`, else `model.onnx` itself); then the
model's own files: `config.json`, `labels.json`, `vocab.txt`, and for BERT-family models the
Hugging Face files (`model.safetensors`, `tokenizer_config.json`), for the BiLSTM its Keras
weights (`model.weights.h5`).

Errors in an export folder are `bertdistill.errors.UserError`s of one line naming the file (and
for export_info.json the key).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from bertdistill.errors import ConfigError, MissingFileError, read_json_object, shorten
from bertdistill.files import atomic_output

# File names.
EXPORT_INFO = "export_info.json"
SAVED_MODEL = "saved_model"
MODEL_FILES = {"float32": "model.onnx", "int8": "model.int8.onnx"}
PORTABLE_ONNX = "model.portable.onnx"
CONFIG = "config.json"
LABELS = "labels.json"
VOCAB = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"  # BERT family: the casing
HF_WEIGHTS = "model.safetensors"  # BERT family (a Hugging Face folder)
KERAS_WEIGHTS = "model.weights.h5"  # the BiLSTM
EXPORT_CONTENTS = f"{EXPORT_INFO}, {MODEL_FILES['float32']}, {SAVED_MODEL}/"  # for messages

# Inputs and outputs of the SavedModel's ids signature and of the ONNX graphs.
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
WORD_INPUTS = ("input_ids",)
OUTPUTS = ("logits", "probabilities")
# SavedModel signatures: token ids (int32, as TensorFlow Serving clients send them) -> OUTPUTS.
IDS_SIGNATURE = "serving_default"
# BERT-family exports also have a string signature, the tokenizer inside the graph
# (`bertdistill.export.text_signature`): SINGLE_TEXT (TEXT_PAIR for a pair model), string [batch]
# -> TEXT_OUTPUTS (`label` string [batch]; `probabilities`, `logits` float32 [batch, num_labels]).
TEXT_SIGNATURE = "serve_text"
TEXT_OUTPUTS = ("label", "probabilities", "logits")
# ONNX graphs take int64 ids, the dtype tokenizers give; older exports took int32.
ONNX_ID_DTYPE = np.int64
ONNX_TENSOR_DTYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}

# ---------------------------------------------------------------------------------------------
# export_info.json. Written by `bertdistill.export.export.export_folder` (the exporter's `info` plus what
# it measured); `check_export_info` checks the keys readers rely on:
#
#   model           required: the model kind, one of MODEL_KINDS (it names the text encoding)
#   max_seq_length  required for BERT_KINDS: an integer (tokens; the BiLSTM's is in config.json)
#   labels          a non-empty list of labels (strings or integers), in the model's output order
#   do_lower_case   true or false
#   text_inputs     the texts of one example: SINGLE_TEXT (the default) or TEXT_PAIR (BERT kinds)
#   columns         the task's columns they came from ({"text": ..., "text_b": ..., "label": ...})
#   inputs          the ONNX graph's input names (a list of strings)
#   onnx_portable   the graph with standard operators only (PORTABLE_ONNX or model.onnx), or null
#   int8_gate       the INT8 gate's record (`bertdistill.export.int8_gate`), its `recommended` file one of
#                   MODEL_FILES' values
#   saved_model_signatures  {signature name: {"inputs": [...], "outputs": [...]}} of the SavedModel
#
# Other keys (versions, settings, the training's best epoch, ...) are records for people.
MODEL = "model"
BERT_KINDS = ("bert_classifier", "tinybert")
WORD_KINDS = ("bilstm_classifier",)
MODEL_KINDS = BERT_KINDS + WORD_KINDS
MAX_SEQ_LENGTH = "max_seq_length"
TEXT_INPUTS = "text_inputs"
COLUMNS = "columns"
INT8_GATE = "int8_gate"
DEFAULT_INT8_MAX_DROP = 0.5  # dev points INT8 may lose and still be recommended; every int8_max_drop's default
# The weight MatMuls a transformer's INT8 model keeps in float32 (`int8_keep_float`): comma-separated
# parts, each `ffn_outputs:N` (the feed-forward output projections of the first N layers), a layer
# name of INT8_LAYER_NAMES (every weight MatMul under a layer so named) or `none`. The default was
# chosen on the MiniLM teacher for accuracy, answers changed and speed (docs/results.md).
INT8_KEEP_FLOAT = "ffn_outputs:2"
INT8_LAYER_NAMES = ("query", "key", "value", "attention_output", "intermediate", "output", "pooler", "classifier")
SIGNATURES_INFO = "saved_model_signatures"
SINGLE_TEXT = ("text",)
TEXT_PAIR = ("text", "text_b")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def text_inputs(info: Mapping) -> tuple[str, ...]:
    """The texts an export reads (`SINGLE_TEXT` or `TEXT_PAIR`), from its export_info; ValueError
    for anything else."""
    raw = info.get(TEXT_INPUTS) or SINGLE_TEXT
    value = tuple(raw) if isinstance(raw, (list, tuple)) else raw
    if value not in (SINGLE_TEXT, TEXT_PAIR):
        raise ValueError(f"{TEXT_INPUTS} is {shorten(repr(raw), 80)}, neither {list(SINGLE_TEXT)} nor {list(TEXT_PAIR)}")
    return value


def describe_texts(inputs: tuple[str, ...]) -> str:
    """"sentence pairs (text, text_b)" or "single texts", for messages."""
    return "sentence pairs (text, text_b)" if inputs == TEXT_PAIR else "single texts"


def keep_float_parts(setting: str) -> list[str]:
    """The parts of an `int8_keep_float` setting (INT8_KEEP_FLOAT); ValueError naming the first part
    that is none of `none`, `ffn_outputs:N` or a name of INT8_LAYER_NAMES."""
    parts = [part.strip() for part in setting.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"'{setting}' names nothing (none quantizes every weight MatMul)")
    for part in parts:
        layers = part[len("ffn_outputs:"):] if part.startswith("ffn_outputs:") else None
        if not (part == "none" or part in INT8_LAYER_NAMES or (layers is not None and layers.isdigit())):
            raise ValueError(f"'{part}' is none of none, ffn_outputs:N (N >= 0) or a layer name "
                             f"({', '.join(INT8_LAYER_NAMES)})")
    return parts


def _schema_problem(info: Mapping) -> tuple[str, str] | None:
    """(key, what is wrong with it) for the first key of `info` that breaks the schema, or None."""
    kind = info.get(MODEL)
    if kind not in MODEL_KINDS:
        return MODEL, f"is {shorten(repr(kind), 60)}, not a model the predictor knows ({', '.join(MODEL_KINDS)})"
    if kind in BERT_KINDS and not _is_int(info.get(MAX_SEQ_LENGTH)):
        return MAX_SEQ_LENGTH, f"is {shorten(repr(info.get(MAX_SEQ_LENGTH)), 60)}, not an integer"
    labels = info.get("labels")
    if labels is not None and (not isinstance(labels, list) or not labels
                               or not all(isinstance(x, str) or _is_int(x) for x in labels)):
        return "labels", f"is {shorten(repr(labels), 60)}, not a non-empty list of labels"
    if info.get("do_lower_case") is not None and not isinstance(info["do_lower_case"], bool):
        return "do_lower_case", f"is {shorten(repr(info['do_lower_case']), 60)}, not true or false"
    try:
        texts = text_inputs(info)
    except ValueError as e:
        return TEXT_INPUTS, str(e).removeprefix(f"{TEXT_INPUTS} ")
    if texts == TEXT_PAIR and kind in WORD_KINDS:
        return TEXT_INPUTS, f"is {list(TEXT_PAIR)}, but a {kind} reads single texts"
    if info.get(COLUMNS) is not None and not isinstance(info[COLUMNS], dict):
        return COLUMNS, f"is {shorten(repr(info[COLUMNS]), 60)}, not an object"
    inputs = info.get("inputs")
    if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs)):
        return "inputs", f"is {shorten(repr(inputs), 60)}, not a list of input names"
    if info.get("onnx_portable") not in (None, PORTABLE_ONNX, MODEL_FILES["float32"]):
        return "onnx_portable", (f"is {shorten(repr(info['onnx_portable']), 60)}, not {PORTABLE_ONNX}, "
                                 f"{MODEL_FILES['float32']} or null")
    gate = info.get(INT8_GATE)
    if gate is not None and (not isinstance(gate, dict) or gate.get("recommended") not in MODEL_FILES.values()):
        return INT8_GATE, f"is not an INT8 gate record recommending {' or '.join(MODEL_FILES.values())}"
    if info.get(SIGNATURES_INFO) is not None and not isinstance(info[SIGNATURES_INFO], dict):
        return SIGNATURES_INFO, "is not an object"
    return None


def check_export_info(info: object, path: str) -> dict:
    """`info`, the content of the export_info.json at `path`, when it keeps the schema above; else
    a one-line `ConfigError` naming the file and the key."""
    if not isinstance(info, dict):
        raise ConfigError(f"{shorten(path)} is not a JSON object; export the model again")
    problem = _schema_problem(info)
    if problem:
        key, what = problem
        raise ConfigError(f"{shorten(path)}: key {key!r} {what}; export the model again")
    return info


def run_folder_error(folder: str) -> MissingFileError | None:
    """For a run folder (one holding `export/`): the error that tells to pass its export folder;
    else None."""
    inner = os.path.join(folder, "export")
    if os.path.isfile(os.path.join(inner, EXPORT_INFO)) or os.path.isfile(os.path.join(inner, CONFIG)):
        return MissingFileError(f"{shorten(folder)} is a run folder, not an export folder: pass {shorten(inner)}")
    return None


def load_export_info(folder: str) -> dict:
    """The `export_info.json` of the export folder `folder` as it is (a JSON object), unchecked; a
    `UserError` when `folder` is not an export folder or the file is not a JSON object."""
    if not os.path.isdir(folder):
        what = "is a file" if os.path.exists(folder) else "does not exist"
        raise MissingFileError(f"{shorten(folder)} {what}: expected an export folder ({EXPORT_CONTENTS} ...)")
    path = os.path.join(folder, EXPORT_INFO)
    if not os.path.isfile(path):
        raise run_folder_error(folder) or MissingFileError(
            f"{shorten(folder)} is not an export folder of this toolkit: no {EXPORT_INFO} (expected {EXPORT_INFO}, "
            f"{MODEL_FILES['float32']}, {VOCAB}, {LABELS})")
    return read_json_object(path, "the export's information", "export the model again")


def read_export_info(folder: str) -> dict:
    """The `export_info.json` of the export folder `folder`, checked (`check_export_info`)."""
    return check_export_info(load_export_info(folder), os.path.join(folder, EXPORT_INFO))


def read_text_inputs(folder: str) -> tuple[str, ...] | None:
    """What the model of an export folder reads (`text_inputs`); None for a folder without
    export_info.json (another model source: unknown)."""
    if not os.path.isfile(os.path.join(folder, EXPORT_INFO)):
        return None
    return text_inputs(read_export_info(folder))


def write_export_info(folder: str, info: Mapping) -> None:
    """Writes `info` as the folder's `export_info.json`, atomically."""
    with atomic_output(os.path.join(folder, EXPORT_INFO)) as f:
        json.dump(dict(info), f, indent=2)


def recommended_precision(info: Mapping) -> str:
    """"int8" when the export's INT8 gate (`bertdistill.export.int8_gate`) recommends `model.int8.onnx`, else "float32"."""
    gate = info.get(INT8_GATE)
    return "int8" if isinstance(gate, dict) and gate.get("recommended") == MODEL_FILES["int8"] else "float32"


# ---------------------------------------------------------------------------------------------
# Padding: rows of token ids -> right-padded batches.


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    """int32 [len(rows), longest row], right-padded with `pad_id`: the tokenizer's pad id for
    token ids (BERT's `[PAD]` is 0, MPNet's `<pad>` 1, the BiLSTM's `[PAD]` 0), 0 for token
    type ids and masks."""
    batch = np.full((len(rows), max(map(len, rows), default=0)), pad_id, np.int32)
    for out, row in zip(batch, rows):
        out[:len(row)] = row
    return batch


def attention_mask(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """int32 [len(rows), longest row]: 1 on each row's tokens, 0 on the padding."""
    return pad([[1] * len(row) for row in rows], 0)


def bert_features(ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """The BERT inputs (`BERT_INPUTS`) of unpadded rows: ids padded with the tokenizer's `pad_id`,
    the attention mask, token type ids padded with 0. A graph without token types (MPNet) is fed
    only the inputs it takes (`OnnxModel`)."""
    return {"input_ids": pad(ids, pad_id), "attention_mask": attention_mask(ids), "token_type_ids": pad(type_ids, 0)}


# ---------------------------------------------------------------------------------------------
# The ONNX runner.


def input_dtypes(session) -> dict[str, type | None]:
    """Each input of an ONNX Runtime session -> the numpy dtype of its token ids (None: not ids)."""
    return {i.name: ONNX_TENSOR_DTYPES.get(i.type) for i in session.get_inputs()}


class OnnxModel:
    """An exported ONNX classifier on the CPU: named integer inputs -> `logits` and `probabilities`.

    The graph is fed the features it takes, by its input names (a BERT graph without
    `token_type_ids`, as MPNet's, gets only `input_ids` and `attention_mask`), each in the dtype
    it takes (int64; int32 in older exports). `predict` returns the logits, `run` both outputs.
    `threads`: intra-op threads (0: all cores); `spin_wait`: let idle threads spin (lower latency
    on an idle machine, much lower throughput on a shared one). A missing or unloadable file, or a
    graph that is not a classifier exported by this toolkit, is a one-line `UserError`."""

    def __init__(self, onnx_path: str, threads: int = 0, spin_wait: bool = False):
        import onnxruntime as ort

        if not os.path.isfile(onnx_path):
            raise MissingFileError(f"ONNX model not found: {shorten(onnx_path)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's threads spin between calls by default, taking the cores from the tokenizer,
        # the HTTP server and anything else running (serve.py's throughput without spinning:
        # docs/speed.md, "ONNX Runtime thread spinning").
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
        try:
            self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for bad files
            raise ConfigError(f"{shorten(onnx_path)}: ONNX Runtime cannot load it ({shorten(str(e), 150)}); "
                              "export the model again") from None
        self.path = onnx_path
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_dtypes = input_dtypes(self.session)
        unknown = [name for name, dtype in self.input_dtypes.items() if dtype is None]
        if unknown:
            raise ConfigError(f"{shorten(onnx_path)}: inputs {unknown} are not int32/int64 token ids: "
                              "not a classifier exported by this toolkit; export the model again")
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [name for name in OUTPUTS if name not in self.output_names]
        if missing:
            raise ConfigError(f"{shorten(onnx_path)} has outputs {self.output_names}, not {list(OUTPUTS)}: "
                              "not a classifier exported by this toolkit; export the model again")

    def feed(self, features: Mapping[str, object]) -> dict[str, np.ndarray]:
        """The graph's inputs taken from `features` (extra features are left out), in its dtypes."""
        missing = [name for name in self.input_names if name not in features]
        if missing:
            raise ValueError(f"{shorten(self.path)} takes {self.input_names}; no {missing} among the features "
                             f"{sorted(features)}")
        return {name: np.asarray(features[name], dtype) for name, dtype in self.input_dtypes.items()}

    def run(self, features: Mapping[str, object]) -> dict[str, np.ndarray]:
        """`logits` and `probabilities` (float32 [batch, num_labels]) for a batch of features."""
        logits, probabilities = self.session.run(list(OUTPUTS), self.feed(features))
        return {"logits": logits, "probabilities": probabilities}

    def predict(self, features: Mapping[str, object]) -> np.ndarray:
        """Logits (float32 [batch, num_labels]) for a batch of features."""
        return self.session.run(["logits"], self.feed(features))[0]
