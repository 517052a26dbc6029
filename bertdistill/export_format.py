"""The export folder format, in one place (no TensorFlow): file names, the models' inputs and
outputs, the SavedModel's signature names and the dtypes of the ONNX inputs.

An export folder holds `export_info.json` (what was exported and how, see
`bertdistill.export.export_folder`), `saved_model/` (TensorFlow Serving), `model.onnx` (ONNX
Runtime; for BERT models its optimized graph with `com.microsoft` operators), `model.int8.onnx`,
and a float32 ONNX graph with standard operators only, named by export_info's `onnx_portable`
(`model.portable.onnx` beside an optimized `model.onnx`, else `model.onnx` itself).
"""

from __future__ import annotations

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
# BERT-family exports also have a string signature, the tokenizer inside the graph
# (`bertdistill.text_signature`): TEXT_INPUTS (PAIR_TEXT_INPUTS for a pair model), string [batch]
# -> TEXT_OUTPUTS (`label` string [batch]; `probabilities`, `logits` float32 [batch, num_labels]).
TEXT_SIGNATURE = "serve_text"
TEXT_INPUTS = ("text",)
PAIR_TEXT_INPUTS = ("text", "text_b")
TEXT_OUTPUTS = ("label", "probabilities", "logits")
# export_info.json key: {signature name: {"inputs": [...], "outputs": [...]}} of the SavedModel.
SIGNATURES_INFO = "saved_model_signatures"
# ONNX graphs take int64 ids, the dtype tokenizers give; older exports took int32.
ONNX_ID_DTYPE = np.int64
ONNX_TENSOR_DTYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
