"""Export: Keras vs SavedModel vs ONNX logits, float32 from mixed precision, INT8, atomic folders."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill import export
from bertdistill.bert import BertClassifier, BertEncoder
from tests.bert_fixtures import tiny_batch, tiny_config


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
    onnx = export.OnnxClassifier(str(folder / "model.onnx"))
    for batch in (tiny_batch(), _batch(5, 11, seed=1), _batch(1, 3, seed=2)):
        expected = keras.ops.convert_to_numpy(model(batch, training=False))
        outputs = serving(**{k: tf.constant(v) for k, v in batch.items()})
        np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(onnx.predict(batch), expected, atol=1e-4)


def test_int8_model_is_smaller_and_mostly_agrees(exported):
    model, folder = exported
    batch = _batch(32, 10, seed=3)
    float_logits = export.OnnxClassifier(str(folder / "model.onnx")).predict(batch)
    int8_logits = export.OnnxClassifier(str(folder / "model.int8.onnx")).predict(batch)
    assert (int8_logits.argmax(-1) == float_logits.argmax(-1)).mean() >= 0.8
    assert os.path.getsize(folder / "model.int8.onnx") < os.path.getsize(folder / "model.onnx")


def test_folder_contents(exported):
    _, folder = exported
    info = json.loads((folder / "export_info.json").read_text())
    assert info["labels"] == ["a", "b", "c"] and info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info["onnx_max_abs_error"] < 1e-4
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
    logits = export.OnnxClassifier(str(tmp_path / "export" / "model.onnx")).predict(tiny_batch())
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
