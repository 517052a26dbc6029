"""The export folder format, in one place (no TensorFlow): file names, the models' inputs and
outputs, the SavedModel's signature names and the dtypes of the ONNX inputs.

An export folder holds `export_info.json` (what was exported and how, see
`bertdistill.export.export_folder`), `saved_model/` (TensorFlow Serving), `model.onnx` (ONNX
Runtime; for BERT models its optimized graph with `com.microsoft` operators), `model.int8.onnx`,
and a float32 ONNX graph with standard operators only, named by export_info's `onnx_portable`
(`model.portable.onnx` beside an optimized `model.onnx`, else `model.onnx` itself).
"""

from __future__ import annotations

import json
import os

import numpy as np

EXPORT_INFO = "export_info.json"
SAVED_MODEL = "saved_model"
MODEL_FILES = {"float32": "model.onnx", "int8": "model.int8.onnx"}
PORTABLE_ONNX = "model.portable.onnx"
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
WORD_INPUTS = ("input_ids",)
OUTPUTS = ("logits", "probabilities")
# SavedModel signatures: token ids (int32, as TensorFlow Serving clients send them) -> OUTPUTS.
IDS_SIGNATURE = "serving_default"
# What the model reads, in export_info: `text_inputs` names the texts of one example (one text, or
# a pair: the serving signature's and the predictor's inputs), `columns` the task's columns they
# came from ({"text": ..., "text_b": ..., "label": ...}); the labels are under `labels`.
# Exports without `text_inputs` read one text.
TEXT_INPUTS = "text_inputs"
COLUMNS = "columns"
SINGLE_TEXT = ("text",)
TEXT_PAIR = ("text", "text_b")


def text_inputs(info: dict) -> tuple[str, ...]:
    """The texts an export reads (`SINGLE_TEXT` or `TEXT_PAIR`), from its export_info; ValueError
    for anything else."""
    value = tuple(info.get(TEXT_INPUTS) or SINGLE_TEXT)
    if value not in (SINGLE_TEXT, TEXT_PAIR):
        raise ValueError(f"{TEXT_INPUTS} {list(value)} is neither {list(SINGLE_TEXT)} nor {list(TEXT_PAIR)}")
    return value


def read_text_inputs(folder: str) -> tuple[str, ...] | None:
    """What the model of an export folder reads (`text_inputs`); None for a folder without
    export_info.json (another model source: unknown)."""
    path = os.path.join(folder, EXPORT_INFO)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return text_inputs(json.load(f))


def describe_texts(inputs: tuple[str, ...]) -> str:
    """"sentence pairs (text, text_b)" or "single texts", for messages."""
    return "sentence pairs (text, text_b)" if inputs == TEXT_PAIR else "single texts"


# BERT-family exports also have a string signature, the tokenizer inside the graph
# (`bertdistill.text_signature`): SINGLE_TEXT (TEXT_PAIR for a pair model), string [batch]
# -> TEXT_OUTPUTS (`label` string [batch]; `probabilities`, `logits` float32 [batch, num_labels]).
TEXT_SIGNATURE = "serve_text"
TEXT_OUTPUTS = ("label", "probabilities", "logits")
# export_info.json key: {signature name: {"inputs": [...], "outputs": [...]}} of the SavedModel.
SIGNATURES_INFO = "saved_model_signatures"
# ONNX graphs take int64 ids, the dtype tokenizers give; older exports took int32.
ONNX_ID_DTYPE = np.int64
ONNX_TENSOR_DTYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
