"""Export: Keras vs SavedModel vs ONNX logits, float32 from mixed precision, INT8, atomic folders;
TensorFlow Serving's loader; onnxruntime's transformer optimizer on the BERT graph beside the
portable one; the INT8 gate and the recommended model."""
import json
import os
import shutil

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from onnx.reference import ReferenceEvaluator

from bertdistill.export import export, int8_gate, onnx_fusion
from bertdistill.models.bert import BertClassifier, BertEncoder
from bertdistill.export_format import (IDS_SIGNATURE, INT8_KEEP_FLOAT, INT8_LAYER_NAMES, MODEL_FILES, PORTABLE_ONNX,
                                       SAVED_MODEL, OnnxModel)
from bertdistill.serving.predictor import Predictor
from tests.bert_fixtures import tiny_batch, tiny_config
from tests.export_fixtures import LABELS, TEXTS, tiny_exports
from tests.serving_loader import run_signatures


def _batch(batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(length)[None] < rng.integers(2, length + 1, size=(batch, 1))).astype(np.int32)
    return {"input_ids": (rng.integers(5, 20, size=(batch, length)) * mask).astype(np.int32),
            "attention_mask": mask, "token_type_ids": np.zeros((batch, length), np.int32)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    # Wide enough that weights, not quantization scales, dominate the file size.
    model = BertClassifier(BertEncoder(tiny_config(hidden_size=64, intermediate_size=256)), num_labels=3)
    export.export_folder(model, str(folder / "export"), sample=tiny_batch(), info={"labels": ["a", "b", "c"]})
    return model, folder / "export"


def test_export_folder_has_the_default_permissions(exported):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(exported[1]).st_mode & 0o777 == 0o777 & ~umask


def test_keras_saved_model_and_onnx_agree_on_dynamic_shapes(exported):
    model, folder = exported
    serving = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    onnx = OnnxModel(str(folder / "model.onnx"))
    for batch in (tiny_batch(), _batch(5, 11, seed=1), _batch(1, 3, seed=2)):
        expected = keras.ops.convert_to_numpy(model(batch, training=False))
        outputs = serving(**{k: tf.constant(v) for k, v in batch.items()})
        np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(onnx.predict(batch), expected, atol=1e-4)


def test_int8_model_is_smaller_and_mostly_agrees(exported):
    model, folder = exported
    batch = _batch(32, 10, seed=3)
    float_logits = OnnxModel(str(folder / "model.onnx")).predict(batch)
    int8_logits = OnnxModel(str(folder / "model.int8.onnx")).predict(batch)
    assert (int8_logits.argmax(-1) == float_logits.argmax(-1)).mean() >= 0.8
    assert os.path.getsize(folder / "model.int8.onnx") < os.path.getsize(folder / "model.onnx")


def test_folder_contents(exported):
    _, folder = exported
    info = json.loads((folder / "export_info.json").read_text())
    assert info["labels"] == ["a", "b", "c"] and info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info["onnx_max_abs_error"] < 1e-4
    quantization = info["int8_quantization"]
    assert quantization["per_channel"] is True and quantization["op_types"] == ["MatMul", "Gemm"]
    assert "onnx_optimizer" not in info  # only for a transformer
    assert info["onnx_portable"] == "model.onnx" and not (folder / PORTABLE_ONNX).exists()
    assert not [p for p in os.listdir(folder.parent) if p.startswith(".")]


def test_mixed_precision_model_exports_float32(tmp_path):
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    twin = export.float32_twin(model)
    assert twin.dtype_policy.name == "float32" and model.dtype_policy.name == "mixed_bfloat16"
    export.export_folder(model, str(tmp_path / "export"), sample=tiny_batch(), info={}, quantize=False)
    logits = OnnxModel(str(tmp_path / "export" / "model.onnx")).predict(tiny_batch())
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(twin(tiny_batch())), atol=1e-4)


def test_failed_export_keeps_the_previous_one(tmp_path):
    model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    folder = tmp_path / "export"
    export.export_folder(model, str(folder), sample=tiny_batch(), info={"run": 1}, quantize=False)

    def fail_midway(tmp):
        (tmp_path / "marker").write_text(tmp)
        open(os.path.join(tmp, "partial.txt"), "w").close()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        export.export_folder(model, str(folder), sample=tiny_batch(), info={"run": 2}, write_files=fail_midway)
    assert json.loads((folder / "export_info.json").read_text())["run"] == 1
    assert not os.path.exists((tmp_path / "marker").read_text())
    assert sorted(os.listdir(tmp_path)) == ["export", "marker"]


def test_saved_model_holds_weights_not_optimizer_state(tmp_path):
    model = BertClassifier(BertEncoder(tiny_config(hidden_size=64, intermediate_size=256)), num_labels=2)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    export.export_saved_model(model, str(tmp_path / "sm"))
    weights_bytes = sum(w.numpy().nbytes for w in model.weights)
    variables = tmp_path / "sm" / "variables"
    saved_bytes = sum(os.path.getsize(variables / f) for f in os.listdir(variables))
    assert weights_bytes <= saved_bytes < 1.2 * weights_bytes


def test_every_file_of_an_export_has_the_default_permissions(tmp_path):
    def private_files(folder):  # as safetensors (0600) and mkdtemp (0700) write them
        path = os.path.join(folder, "model.safetensors")
        open(path, "w").close()
        os.chmod(path, 0o600)
        os.makedirs(os.path.join(folder, "private"), mode=0o700)
        os.chmod(os.path.join(folder, "private"), 0o700)

    model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    export.export_folder(model, str(tmp_path / "export"), sample=tiny_batch(), info={}, quantize=False,
                         write_files=private_files)
    umask = os.umask(0)
    os.umask(umask)
    modes = {}
    for root, dirs, files in os.walk(tmp_path / "export"):
        for name in dirs + files + ([""] if root == str(tmp_path / "export") else []):
            path = os.path.join(root, name)
            modes[os.path.relpath(path, tmp_path)] = (os.path.isdir(path), os.stat(path).st_mode & 0o777)
    assert "export/model.safetensors" in modes and "export/saved_model/variables" in modes
    assert {mode for is_dir, mode in modes.values() if not is_dir} == {0o666 & ~umask}
    assert {mode for is_dir, mode in modes.values() if is_dir} == {0o777 & ~umask}


def test_parity_check_fails_on_nan_logits(tmp_path):
    model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    model(tiny_batch())
    model.set_weights([np.full(w.shape, np.nan, w.dtype) for w in model.get_weights()])
    with pytest.raises(RuntimeError, match=r"Keras logits on the parity sample are not finite \(\d+ NaN"):
        export.export_folder(model, str(tmp_path / "export"), sample=tiny_batch(), info={}, quantize=False)
    assert os.listdir(tmp_path) == []


def test_saved_models_run_in_tensorflow_servings_loader(tmp_path_factory, tmp_path):
    """A BERT and a BiLSTM export, in a fresh process with the session-based loader: ONNX's answers."""
    exports = tiny_exports(tmp_path_factory)
    jobs, expected = [], []
    for name in ("bert", "lstm"):
        predictor = Predictor(exports[name].folder, quantized=False)
        features = predictor.encoder.features(predictor.encode(TEXTS))
        jobs.append((os.path.join(exports[name].folder, SAVED_MODEL), IDS_SIGNATURE, features))
        expected.append(predictor.model.run(features))
    for served, onnx_outputs in zip(run_signatures(jobs, tmp_path), expected):
        assert sorted(served) == ["logits", "probabilities"]
        for output in served:
            np.testing.assert_allclose(served[output], onnx_outputs[output], atol=1e-4)


# onnxruntime's transformer optimizer

LAYERS, HEADS, HIDDEN = 2, 2, 64


def _trained_looking(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random non-zero weights everywhere: a fresh model's zero biases are folded away by tf2onnx,
    which leaves no bias Add for the attention fusion to find (a trained model has them)."""
    model(tiny_batch())
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        offset = 1.0 if "gamma" in weight.path else 0.0
        weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32") + offset)
    return model


@pytest.fixture(scope="module", params=["mean", "cls"])
def optimized(request, tmp_path_factory):
    config = tiny_config(hidden_size=HIDDEN, num_attention_heads=HEADS, num_hidden_layers=LAYERS,
                         intermediate_size=128)
    model = _trained_looking(BertClassifier(BertEncoder(config), num_labels=2, pooling=request.param))
    folder = tmp_path_factory.mktemp("optimized") / "export"
    export.export_folder(model, str(folder), sample=_batch(4, 9, seed=4), info={}, transformer=(HEADS, HIDDEN))
    return model, folder


def test_optimized_graph_matches_keras_and_records_its_fusions(optimized):
    model, folder = optimized
    record = json.loads((folder / "export_info.json").read_text())["onnx_optimizer"]
    assert record["applied"] is True and record["max_abs_error"] < 1e-4
    assert record["fused_operators"] == {"MultiHeadAttention": LAYERS, "BiasGelu": LAYERS,
                                         "LayerNormalization": 2 * LAYERS + 1}
    assert record["rewrites"]["tensordot"] == 6 * LAYERS and record["rewrites"]["packed_nodes"] > 0
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert {"MultiHeadAttention", "BiasGelu", "LayerNormalization", "NonZero"} <= ops and "Erf" not in ops
    onnx_model = OnnxModel(str(folder / "model.onnx"))
    # padding from none to most of the row, one row, a pair: the padding removal is exact
    for batch in (_batch(6, 12, seed=5), _batch(1, 3, seed=6), _batch(3, 2, seed=7), tiny_batch(),
                  {**_batch(8, 16, seed=8), "token_type_ids": (np.arange(16)[None] > 7).repeat(8, 0).astype(np.int32)}):
        expected = keras.ops.convert_to_numpy(model(batch, training=False))
        np.testing.assert_allclose(onnx_model.predict(batch), expected, atol=1e-4)


def test_portable_graph_runs_in_onnx_reference_as_onnx_runtime_runs_the_optimized_one(optimized):
    _, folder = optimized
    assert json.loads((folder / "export_info.json").read_text())["onnx_portable"] == PORTABLE_ONNX
    portable = onnx.load(str(folder / PORTABLE_ONNX))
    assert {node.domain for node in portable.graph.node} == {""}
    assert "com.microsoft" in {node.domain for node in onnx.load(str(folder / "model.onnx")).graph.node}
    for name in (PORTABLE_ONNX, *MODEL_FILES.values()):  # int64 ids, as tokenizers give them
        graph = onnx.load(str(folder / name)).graph
        assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT64}, name
    batch = {name: ids.astype(np.int64) for name, ids in _batch(6, 12, seed=10).items()}
    optimized_logits = OnnxModel(str(folder / "model.onnx")).session.run(["logits"], batch)[0]
    np.testing.assert_allclose(ReferenceEvaluator(portable).run(["logits"], batch)[0], optimized_logits, atol=1e-4)


def test_int8_model_is_quantized_from_the_optimized_graph(optimized):
    model, folder = optimized
    ops = {node.op_type for node in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert "MultiHeadAttention" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    excluded = json.loads((folder / "export_info.json").read_text())["int8_quantization"]["nodes_to_exclude"]
    assert INT8_KEEP_FLOAT == "ffn_outputs:2" and len(excluded) == min(LAYERS, 2)  # the first FFN output projections
    int8_ops = {node.name: node.op_type for node in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert all(int8_ops[name] == "MatMul" for name in excluded) and "/output_1/" in excluded[0]
    batch = _batch(16, 10, seed=9)
    expected = keras.ops.convert_to_numpy(model(batch, training=False))
    int8_logits = OnnxModel(str(folder / "model.int8.onnx")).predict(batch)
    assert (int8_logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.8


def test_each_int8_keep_float_layer_name_names_weight_matmuls_of_the_graph(optimized):
    model, folder = optimized
    path = str(folder / "model.onnx")
    all_weights = export.weight_matmuls(onnx.load(path))
    kept = {name: export.kept_float_matmuls(path, name) for name in INT8_LAYER_NAMES}
    per_layer = {"query": LAYERS, "key": LAYERS, "value": LAYERS, "attention_output": LAYERS,
                 "intermediate": LAYERS, "output": LAYERS, "pooler": int(model.pooling == "cls"), "classifier": 1}
    assert {name: len(nodes) for name, nodes in kept.items()} == per_layer
    assert sorted(sum(kept.values(), [])) == sorted(all_weights)  # every weight MatMul has one name
    assert export.kept_float_matmuls(path, "none") == []
    assert export.kept_float_matmuls(path, "ffn_outputs:1,output") == kept["output"]  # in graph order, once


def test_export_keeps_the_int8_keep_float_matmuls_in_float32(tmp_path):
    config = tiny_config(hidden_size=HIDDEN, num_attention_heads=HEADS, num_hidden_layers=LAYERS,
                         intermediate_size=128)
    model = _trained_looking(BertClassifier(BertEncoder(config), num_labels=2))
    folder = tmp_path / "export"
    export.export_folder(model, str(folder), sample=_batch(4, 9, seed=4), info={}, transformer=(HEADS, HIDDEN),
                         int8_keep_float="intermediate")
    excluded = json.loads((folder / "export_info.json").read_text())["int8_quantization"]["nodes_to_exclude"]
    assert len(excluded) == LAYERS and all("/intermediate" in name for name in excluded)
    int8_ops = {node.name: node.op_type for node in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert all(int8_ops[name] == "MatMul" for name in excluded)
    assert sum(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in int8_ops.values()) > 0


def test_optimizer_failure_keeps_the_converted_graph(tmp_path, monkeypatch):
    model = _trained_looking(BertClassifier(BertEncoder(tiny_config()), num_labels=2))

    def broken(onnx_path, out_path, num_heads, hidden_size):
        raise RuntimeError("no pattern")

    monkeypatch.setattr(onnx_fusion, "optimize_bert", broken)
    export.export_folder(model, str(tmp_path / "export"), sample=tiny_batch(), info={}, quantize=False,
                         transformer=(2, 8))
    record = json.loads((tmp_path / "export" / "export_info.json").read_text())["onnx_optimizer"]
    assert record["applied"] is False and "RuntimeError: no pattern" in record["reason"]
    assert "Erf" in {node.op_type for node in onnx.load(str(tmp_path / "export" / "model.onnx")).graph.node}


def test_optimized_graph_that_fails_parity_is_not_used(tmp_path, monkeypatch):
    model = _trained_looking(BertClassifier(BertEncoder(tiny_config()), num_labels=2))
    optimize_bert = onnx_fusion.optimize_bert

    def off_by_a_little(onnx_path, out_path, num_heads, hidden_size):
        result = optimize_bert(onnx_path, out_path, num_heads, hidden_size)
        graph = onnx.load(out_path)
        bias = next(t for t in graph.graph.initializer  # the classifier's bias
                    if t.data_type == onnx.TensorProto.FLOAT and tuple(t.dims) == (2,))
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 1e-3, bias.name))
        onnx.save(graph, out_path)
        return result

    monkeypatch.setattr(onnx_fusion, "optimize_bert", off_by_a_little)
    export.export_folder(model, str(tmp_path / "export"), sample=tiny_batch(), info={}, quantize=False,
                         transformer=(2, 8))
    info = json.loads((tmp_path / "export" / "export_info.json").read_text())
    assert info["onnx_optimizer"]["applied"] is False and "differ from Keras" in info["onnx_optimizer"]["reason"]
    assert 5e-4 < info["onnx_optimizer"]["max_abs_error"] < 2e-3 and info["onnx_max_abs_error"] < 1e-4
    kept = onnx.load(str(tmp_path / "export" / "model.onnx"))
    assert "MultiHeadAttention" not in {node.op_type for node in kept.graph.node}
    assert sorted(os.listdir(tmp_path / "export")) == ["export_info.json", "model.onnx", "saved_model"]


# The INT8 gate and the recommended model


@pytest.fixture()
def bert_export(tmp_path_factory, tmp_path):
    """A private copy of the tiny BERT export folder; gold labels for TEXTS that its Keras model gets
    right except on the first two texts (flipped), so a faithful model scores 75.0 (6 of 8); and
    the Keras model's label indices and its encoder (texts -> features), for checking the others."""
    built = tiny_exports(tmp_path_factory)["bert"]
    folder = tmp_path / "export"
    shutil.copytree(built.folder, folder)
    keras_labels = built.keras_probabilities(TEXTS).argmax(-1)
    labels = [LABELS[1 - k] if i < 2 else LABELS[k] for i, k in enumerate(keras_labels)]
    return str(folder), labels, keras_labels, built.encode


def _negate_logits(source: str, target: str) -> None:
    """A deliberately broken "INT8" model: `source` with its logits negated (every answer flips)."""
    model = onnx.load(source)
    producer = next(node for node in model.graph.node if "logits" in node.output)
    producer.output[list(producer.output).index("logits")] = "logits_before_negation"
    model.graph.node.append(onnx.helper.make_node("Neg", ["logits_before_negation"], ["logits"]))
    model.graph.node.sort(key=lambda node: node.op_type == "Softmax")  # the Neg before the probabilities
    onnx.save(model, target)


def _measured(float32: tuple[float, float, float], int8: tuple[float, float, float]):
    """A stand-in for the gate's measurements: (accuracy %, latency ms, examples/s) of each model."""
    calls = []

    def measure(folder, texts, labels, threads):
        calls.append((folder, list(texts), list(labels), threads))
        return {"float32": int8_gate.Measurement(*float32), "int8": int8_gate.Measurement(*int8)}
    return measure, calls


@pytest.mark.parametrize("int8, recommended, reason", [
    ((89.5, 1.5, 500.0), "model.int8.onnx", "INT8 keeps accuracy (drop 0.50 <= 0.5 points) and is faster "
                                            "(1.50 vs 2.00 ms a sentence, 500 vs 400 examples/s)"),
    ((89.25, 1.5, 500.0), "model.onnx", "INT8 loses 0.75 points (> 0.5)"),
    ((90.0, 2.5, 500.0), "model.onnx", "INT8 is not faster (2.50 vs 2.00 ms a sentence, 500 vs 400 examples/s)"),
    ((90.0, 1.5, 300.0), "model.onnx", "INT8 is not faster (1.50 vs 2.00 ms a sentence, 300 vs 400 examples/s)"),
    ((90.0, 2.0, 400.0), "model.onnx", "INT8 is not faster (2.00 vs 2.00 ms a sentence, 400 vs 400 examples/s)"),
    ((80.0, 3.0, 100.0), "model.onnx", "INT8 loses 10.00 points (> 0.5); INT8 is not faster"),
])
def test_gate_recommends_int8_only_when_as_accurate_and_faster(tmp_path, int8, recommended, reason):
    (tmp_path / "export_info.json").write_text(json.dumps({"model": "bert_classifier"}))
    measure, calls = _measured((90.0, 2.0, 400.0), int8)
    gate = int8_gate.run_int8_gate(str(tmp_path), TEXTS[:3], ["neg", "pos", "neg"], max_drop=0.5, threads=2,
                                   measure=measure)
    assert calls == [(str(tmp_path), TEXTS[:3], ["neg", "pos", "neg"], 2)]
    recorded = json.loads((tmp_path / "export_info.json").read_text())["int8_gate"]
    assert recorded == gate and gate["recommended"] == recommended and gate["reason"].startswith(reason)
    assert gate["passed"] is (recommended == "model.int8.onnx")
    assert (gate["float32_accuracy"], gate["float32_latency_ms"], gate["float32_examples_per_s"]) == (90.0, 2.0, 400.0)
    assert (gate["int8_accuracy"], gate["int8_latency_ms"], gate["int8_examples_per_s"]) == int8
    assert gate["examples"] == 3 and gate["max_drop"] == 0.5


def test_gate_measures_both_models_and_the_predictor_follows_it(bert_export):
    folder, labels, keras_labels, encode = bert_export
    before = json.loads(open(os.path.join(folder, "export_info.json")).read())
    gate = int8_gate.run_int8_gate(folder, TEXTS, labels, max_drop=0.5)
    info = json.loads(open(os.path.join(folder, "export_info.json")).read())
    assert info["int8_gate"] == gate and {k: v for k, v in info.items() if k != "int8_gate"} == before
    int8_labels = OnnxModel(os.path.join(folder, "model.int8.onnx")).predict(encode(TEXTS)).argmax(-1)
    np.testing.assert_array_equal(int8_labels, keras_labels)  # INT8 answers these texts as Keras does:
    assert (gate["float32_accuracy"], gate["int8_accuracy"], gate["drop"]) == (75.0, 75.0, 0.0)  # 6 of 8 both
    assert gate["accuracy_kept"] is True  # no point lost
    for precision in ("float32", "int8"):
        assert gate[f"{precision}_latency_ms"] > 0 and gate[f"{precision}_examples_per_s"] > 0
    assert gate["speed"] == {"rounds": 3, "latency_texts": len(TEXTS), "batch_size": 64}
    assert gate["quantization"]["per_channel"] is True
    assert not [name for name in os.listdir(folder) if name.startswith(".")]  # no temporary file left
    assert Predictor(folder).metadata()["model_file"] == gate["recommended"]

    measure, _ = _measured((100.0, 2.0, 400.0), (100.0, 1.0, 800.0))
    int8_gate.run_int8_gate(folder, TEXTS, labels, measure=measure)
    assert Predictor(folder).precision == "int8" and Predictor(folder).metadata()["model_file"] == "model.int8.onnx"
    assert Predictor(folder, quantized=False).precision == "float32"  # an explicit choice wins


def test_gate_refuses_a_broken_int8_model(bert_export):
    folder, labels, _, _ = bert_export
    _negate_logits(os.path.join(folder, "model.onnx"), os.path.join(folder, "model.int8.onnx"))
    gate = int8_gate.run_int8_gate(folder, TEXTS, labels, max_drop=0.5)
    # Two labels: the negated model is right exactly where float32 is wrong (the 2 flipped texts).
    assert (gate["float32_accuracy"], gate["int8_accuracy"], gate["drop"]) == (75.0, 25.0, 50.0)
    assert gate["accuracy_kept"] is False and gate["passed"] is False and gate["recommended"] == "model.onnx"
    assert Predictor(folder).precision == "float32"
    assert Predictor(folder, quantized=True).precision == "int8"  # an explicit choice wins


def test_predictor_uses_float32_without_a_gate(bert_export):
    folder, *_ = bert_export
    assert "int8_gate" not in json.loads(open(os.path.join(folder, "export_info.json")).read())
    assert Predictor(folder).metadata()["model_file"] == "model.onnx"


def test_gate_refuses_sentence_pairs_for_a_single_text_model(bert_export):
    from bertdistill.data.data import InputExample
    from bertdistill.errors import UserError

    folder, *_ = bert_export
    pairs = [InputExample(guid="0", text_a="the movie", text_b="was great", label="pos")]
    with pytest.raises(UserError, match="this model reads single texts"):
        int8_gate.run_int8_gate_on_examples(folder, pairs)
    assert "int8_gate" not in json.loads(open(os.path.join(folder, "export_info.json")).read())
