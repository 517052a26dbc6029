"""Export: float32 SavedModel with a serving signature (written by Keras' `ExportArchive`, so
TensorFlow Serving's session-based loader runs it), ONNX through tf2onnx (for BERT models then
onnxruntime's transformer optimizer and padding removal, `bertdistill.export.onnx_fusion`, beside the
portable graph) and INT8 through onnxruntime's dynamic quantization. The folder's format (file
names, export_info.json) and the ONNX runner: `bertdistill.export_format`.

The serving signature and the ONNX graph take the model's inputs by name (BERT: `input_ids`,
`attention_mask`, `token_type_ids`; the BiLSTM: `input_ids`), [batch, sequence] with both axes
dynamic (int32 in the SavedModel, int64 in ONNX), and return `logits` and `probabilities`
(float32 [batch, num_labels]).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf
from absl import logging

if TYPE_CHECKING:
    import onnx

from bertdistill.training.distribute import precision_policy
from bertdistill.files import atomic_path
from bertdistill.export_format import (BERT_INPUTS, IDS_SIGNATURE, INT8_KEEP_FLOAT, LABELS, MODEL_FILES,
                                       ONNX_ID_DTYPE, OUTPUTS, PORTABLE_ONNX, SAVED_MODEL, SIGNATURES_INFO, SINGLE_TEXT,
                                       TEXT_OUTPUTS, TEXT_PAIR, TEXT_SIGNATURE, OnnxModel, keep_float_parts,
                                       text_inputs, write_export_info)

INPUT_NAMES = BERT_INPUTS
ONNX_OPSET = 17  # LayerNormalization is fused by onnxruntime's optimizer from opset 17 graphs
INT8_OP_TYPES = ("MatMul", "Gemm")
# Dynamic INT8 weights, one scale per output channel, full int8 range (reduce_range is for CPUs
# without VNNI); a transformer keeps the weight MatMuls that its `int8_keep_float` setting names
# in float32 (`export_format.INT8_KEEP_FLOAT`).
INT8_PER_CHANNEL = True
INT8_REDUCE_RANGE = False


def input_signature(input_names: Sequence[str] = INPUT_NAMES,
                    dtype: tf.DType = tf.int32) -> list[dict[str, tf.TensorSpec]]:
    return [{name: tf.TensorSpec([None, None], dtype, name=name) for name in input_names}]


def classify(model: keras.Model, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """float32 `logits` and `probabilities` of `model` on integer features of any dtype."""
    logits = tf.cast(model({name: tf.cast(ids, tf.int32) for name, ids in features.items()}, training=False),
                     tf.float32)
    return {"logits": tf.identity(logits, name="logits"), "probabilities": tf.nn.softmax(logits, name="probabilities")}


def serving_function(model: keras.Model, input_names: Sequence[str] = INPUT_NAMES,
                     dtype: tf.DType = tf.int32) -> tf.types.experimental.GenericFunction:
    """A tf.function from the named integer inputs (of `dtype`) to float32 logits and probabilities."""
    return tf.function(lambda features: classify(model, features), input_signature=input_signature(input_names, dtype),
                       autograph=False)


def export_saved_model(model: keras.Model, path: str, input_names: Sequence[str] = INPUT_NAMES,
                       text: TextSignature | None = None) -> dict[str, dict[str, list[str]]]:
    """Writes a SavedModel whose `serving_default` signature maps the int32 inputs to logits and
    probabilities, and with `text` (a BERT-family model) the string signature `serve_text`
    (`bertdistill.export.text_signature`). Through Keras' `ExportArchive`: a `tf.Module` holding Keras 3
    variables loads with `tf.saved_model.load` but not in the session-based loader of TensorFlow
    Serving and `saved_model_cli run` (tensorflow/serving#2226). The archive holds the variables
    the signatures read, so no optimizer state. Returns each signature's inputs and outputs."""
    archive = keras.export.ExportArchive()
    archive.add_endpoint(IDS_SIGNATURE, lambda features: classify(model, features), input_signature(input_names))
    signatures = {IDS_SIGNATURE: {"inputs": list(input_names), "outputs": list(OUTPUTS)}}
    with tempfile.TemporaryDirectory(prefix="text-signature-") as asset_folder:
        if text:
            from bertdistill.export import text_signature

            text_signature.add_text_signature(archive, TEXT_SIGNATURE, lambda features: classify(model, features),
                                              text.encoding, text.labels, asset_folder)
            signatures[TEXT_SIGNATURE] = {"inputs": list(TEXT_PAIR if text.encoding.pair else SINGLE_TEXT),
                                          "outputs": list(TEXT_OUTPUTS)}
        archive.write_out(path, verbose=False)
    return signatures


@dataclasses.dataclass(frozen=True)
class TextSignature:
    """What the string signature needs: the text encoding (`bertdistill.export.text_signature.TextEncoding`)
    and the label names, in the model's output order."""

    encoding: object
    labels: Sequence[str]


def export_onnx(model: keras.Model, path: str, input_names: Sequence[str] = INPUT_NAMES,
                opset: int = ONNX_OPSET) -> None:
    """Converts the model to ONNX: int64 inputs (the dtype tokenizers give) with dynamic batch and
    sequence axes, standard ONNX operators only."""
    import tf2onnx

    dtype = tf.as_dtype(ONNX_ID_DTYPE)
    tf2onnx.convert.from_function(serving_function(model, input_names, dtype),
                                  input_signature=input_signature(input_names, dtype), opset=opset, output_path=path)


def is_portable(onnx_path: str) -> bool:
    """Whether the ONNX graph uses standard operators only (no `com.microsoft` ones)."""
    import onnx

    return all(node.domain in ("", "ai.onnx") for node in onnx.load(onnx_path, load_external_data=False).graph.node)


def quantize_onnx_int8(onnx_path: str, out_path: str, op_types: Sequence[str] = INT8_OP_TYPES, *,
                       per_channel: bool = INT8_PER_CHANNEL, reduce_range: bool = INT8_REDUCE_RANGE,
                       nodes_to_exclude: Sequence[str] = ()) -> dict:
    """Dynamic INT8 quantization of the weights of `op_types` (activations quantized on the fly);
    returns the settings (for export_info.json). The default covers transformer layers; add `LSTM`
    and `Gather` (embedding tables) for a recurrent student. Graphs with onnxruntime's fused
    operators (no ONNX shape inference through them) are fine: untyped tensors are float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(onnx_path, out_path, weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                     per_channel=per_channel, reduce_range=reduce_range, nodes_to_exclude=list(nodes_to_exclude),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "op_types": list(op_types), "per_channel": per_channel, "reduce_range": reduce_range,
            "nodes_to_exclude": list(nodes_to_exclude)}


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul and Gemm nodes with a weight (an initializer) input, in graph order."""
    weights = {tensor.name for tensor in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type in INT8_OP_TYPES and any(name in weights for name in node.input)]


def kept_float_matmuls(onnx_path: str, setting: str = INT8_KEEP_FLOAT) -> list[str]:
    """The weight MatMuls that the `int8_keep_float` setting leaves in float32 in the transformer
    graph at `onnx_path` (FFN outputs are found in onnxruntime's optimized graph only)."""
    import onnx

    from bertdistill.export import onnx_fusion

    model = onnx.load(onnx_path, load_external_data=False)
    kept: list[str] = []
    for part in keep_float_parts(setting):
        if part.startswith("ffn_outputs:"):
            kept += onnx_fusion.ffn_output_matmuls(model)[:int(part.split(":", 1)[1])]
        elif part != "none":
            kept += [name for name in weight_matmuls(model)
                     if any(segment.startswith(part) for segment in name.split("/"))]
    return list(dict.fromkeys(kept))


def optimize_transformer(onnx_path: str, sample: dict[str, np.ndarray], expected: np.ndarray, *, num_heads: int,
                         hidden_size: int, tolerance: float, converted_path: str) -> dict:
    """Replaces the BERT graph at `onnx_path` by onnxruntime's optimized one (`bertdistill.export.onnx_fusion`)
    when it matches `expected` (Keras' logits on `sample`) within `tolerance`, moving the converted
    graph to `converted_path`; else, or when the optimizer fails, keeps it. Returns what
    happened, for export_info.json."""
    from bertdistill.export import onnx_fusion

    optimized_path = f"{onnx_path}.optimized"
    record = {"tool": "onnxruntime.transformers.optimizer", "model_type": "bert"}
    try:
        result = onnx_fusion.optimize_bert(onnx_path, optimized_path, num_heads, hidden_size)
        error = float(np.abs(OnnxModel(optimized_path).predict(sample) - expected).max())
    except Exception as e:  # noqa: BLE001 - any optimizer failure keeps the converted graph
        record.update(applied=False, reason=f"optimizer failed: {type(e).__name__}: {e}"[:300])
    else:
        record.update(fused_operators=result.fused, rewrites=result.rewrites, max_abs_error=error)
        if error <= tolerance:  # NaN fails this too
            os.replace(onnx_path, converted_path)
            os.replace(optimized_path, onnx_path)
            record["applied"] = True
        else:
            record.update(applied=False, reason=f"optimized logits differ from Keras by {error:.2e} (> {tolerance})")
    if os.path.exists(optimized_path):
        os.remove(optimized_path)
    if not record["applied"]:
        logging.warning("ONNX optimizer not applied, keeping the converted graph: %s", record["reason"])
    return record


def float32_twin(model: keras.Model) -> keras.Model:
    """The same architecture built under the float32 policy, with `model`'s weights."""
    if model.dtype_policy.name == "float32":
        return model
    with precision_policy("float32"):
        twin = model.__class__.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    return twin


def export_folder(model: keras.Model, folder: str, *, sample: dict[str, np.ndarray], info: dict,
                  write_files: Callable[[str], None] | None = None, quantize: bool = True,
                  int8_op_types: Sequence[str] = INT8_OP_TYPES, tolerance: float = 1e-4,
                  input_names: Sequence[str] = INPUT_NAMES, transformer: tuple[int, int] | None = None,
                  text: TextSignature | None = None, int8_keep_float: str = INT8_KEEP_FLOAT) -> None:
    """Writes a self-contained export folder, atomically.

    Contents: `saved_model/`, `model.onnx` (checked against Keras on `sample` within
    `tolerance`; for a `transformer` = (num_heads, hidden_size), onnxruntime's optimized graph
    when it passes the same check, see `optimize_transformer`, and then the converted graph as
    `model.portable.onnx`), `model.int8.onnx` when `quantize` (weights of `int8_op_types`, from
    `model.onnx`; a transformer's keeps those that `int8_keep_float` names in float32), `export_info.json` (`info` plus names, opset, `onnx_portable`: the graph with
    standard operators only, `onnx_optimizer`, `int8_quantization`), and whatever
    `write_files(tmp_folder)` adds (weights, config, vocab, labels). With `text`, the SavedModel
    also has the string signature (`export_saved_model`); `saved_model_signatures` in
    export_info lists each signature's inputs and outputs. The folder is built beside `folder` and swapped in only when
    complete (`files.atomic_path`), so a failed export leaves a previous one intact.
    """
    model = float32_twin(model)
    with atomic_path(folder) as tmp:
        os.mkdir(tmp)
        if write_files:
            write_files(tmp)
        signatures = export_saved_model(model, os.path.join(tmp, SAVED_MODEL), input_names, text)
        onnx_path = os.path.join(tmp, MODEL_FILES["float32"])
        export_onnx(model, onnx_path, input_names)
        sample = {name: sample[name] for name in input_names}
        expected = keras.ops.convert_to_numpy(model(sample, training=False))
        actual = OnnxModel(onnx_path).predict(sample)
        for source, logits in (("Keras", expected), ("ONNX", actual)):
            if not np.isfinite(logits).all():  # NaN - NaN would pass the tolerance check
                raise RuntimeError(f"{source} logits on the parity sample are not finite "
                                   f"({int(np.isnan(logits).sum())} NaN, {int(np.isinf(logits).sum())} Inf of "
                                   f"{logits.size}): diverged training or broken weights; nothing was exported")
        error = float(np.abs(actual - expected).max())
        if error > tolerance:
            raise RuntimeError(f"ONNX logits differ from Keras by {error:.2e} (> {tolerance})")
        extra = {}
        if transformer:
            extra["onnx_optimizer"] = optimize_transformer(onnx_path, sample, expected, num_heads=transformer[0],
                                                           hidden_size=transformer[1], tolerance=tolerance,
                                                           converted_path=os.path.join(tmp, PORTABLE_ONNX))
        portable = PORTABLE_ONNX if os.path.exists(os.path.join(tmp, PORTABLE_ONNX)) else MODEL_FILES["float32"]
        extra["onnx_portable"] = portable if is_portable(os.path.join(tmp, portable)) else None
        if quantize:
            extra["int8_quantization"] = quantize_onnx_int8(
                onnx_path, os.path.join(tmp, MODEL_FILES["int8"]), int8_op_types,
                nodes_to_exclude=kept_float_matmuls(onnx_path, int8_keep_float) if transformer else ())
        write_export_info(tmp, {**info, "inputs": list(input_names), "outputs": list(OUTPUTS), "onnx_opset": ONNX_OPSET,
                                SIGNATURES_INFO: signatures, "onnx_max_abs_error": error, **extra,
                                "tensorflow": tf.__version__, "keras": keras.__version__})
        # One permission for every file (the default: 0666/0777 less the umask); some writers
        # (safetensors: 0600, mkdtemp: 0700) make theirs private.
        umask = os.umask(0)
        os.umask(umask)
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)
        os.chmod(tmp, 0o777 & ~umask)


def export_bert_classifier(model: keras.Model, folder: str, *, vocab_file: str, labels: list[str],
                           do_lower_case: bool, sample: dict[str, np.ndarray], info: dict,
                           int8_keep_float: str = INT8_KEEP_FLOAT) -> None:
    """`export_folder` for a `BertClassifier`, with the Hugging Face files
    (`checkpoints.save_hf_folder`; tokenizer_config's `model_max_length` is `info["max_seq_length"]`
    when given) and `labels.json`: the folder is usable again as a `--init_checkpoint`, a
    `--teacher_model` or a `generate_dataset.py --model`, and in transformers. With
    `info["max_seq_length"]`, the SavedModel also takes text (`serve_text`: `text`, and `text_b`
    when `info` records a pair model, `export_format.TEXT_INPUTS`), encoded in the graph as the
    predictor encodes it."""
    from bertdistill.models import checkpoints
    from bertdistill.export.text_signature import TextEncoding

    def write_files(tmp: str) -> None:
        checkpoints.save_hf_folder(model, tmp, vocab_file, labels, do_lower_case, info.get("max_seq_length"))
        with open(os.path.join(tmp, LABELS), "w", encoding="utf-8") as f:
            json.dump(labels, f)

    config = model.encoder.config
    text = None
    if info.get("max_seq_length"):
        pair = text_inputs(info) == TEXT_PAIR
        text = TextSignature(TextEncoding(vocab_file, do_lower_case, int(info["max_seq_length"]), pair), labels)
    export_folder(model, folder, sample=sample, write_files=write_files, text=text,
                  transformer=(config.num_attention_heads, config.hidden_size), int8_keep_float=int8_keep_float,
                  info={"labels": labels, "do_lower_case": do_lower_case, "parameters": model.count_params(), **info})
