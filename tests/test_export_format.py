"""bertdistill/export_format.py: no TensorFlow, the export_info.json schema's one-line errors, the
ONNX runner on graphs with and without token_type_ids (int64 and int32 ids), padding with the
tokenizer's pad id."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bertdistill import errors, export_format
from bertdistill.export_format import OnnxModel, attention_mask, bert_features, pad

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imports_neither_tensorflow_nor_keras():
    code = ("import sys\nimport bertdistill.export_format\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})


# --- export_info.json --------------------------------------------------------------------------------

GOOD = {"model": "bert_classifier", "max_seq_length": 16, "labels": ["neg", "pos"], "do_lower_case": True,
        "text_inputs": ["text", "text_b"], "columns": {"text": "a", "text_b": "b", "label": "y"},
        "inputs": ["input_ids", "attention_mask"], "onnx_portable": "model.portable.onnx",
        "int8_gate": {"recommended": "model.int8.onnx"}, "saved_model_signatures": {}, "anything": [1]}


def write_info(folder, info):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "export_info.json").write_text(json.dumps(info))
    return str(folder)


def test_a_valid_export_info_is_read_with_every_key(tmp_path):
    folder = write_info(tmp_path / "export", GOOD)
    assert export_format.read_export_info(folder) == GOOD
    assert export_format.text_inputs(GOOD) == export_format.TEXT_PAIR
    assert export_format.recommended_precision(GOOD) == "int8"
    lstm = {"model": "bilstm_classifier"}  # its max_seq_length is in config.json
    assert export_format.read_export_info(write_info(tmp_path / "lstm", lstm)) == lstm
    assert export_format.text_inputs(lstm) == export_format.SINGLE_TEXT
    assert export_format.recommended_precision(lstm) == "float32"


@pytest.mark.parametrize("key, value, words", [
    ("model", "gpt", "is 'gpt', not a model the predictor knows (bert_classifier, tinybert, bilstm_classifier)"),
    ("model", None, "is None, not a model"),
    ("max_seq_length", "16", "is '16', not an integer"),
    ("max_seq_length", True, "is True, not an integer"),
    ("labels", [], "not a non-empty list of labels"),
    ("labels", [1.5], "not a non-empty list of labels"),
    ("do_lower_case", "yes", "is 'yes', not true or false"),
    ("text_inputs", ["text_b"], "is ['text_b'], neither ['text'] nor ['text', 'text_b']"),
    ("columns", ["a"], "not an object"),
    ("inputs", "input_ids", "not a list of input names"),
    ("onnx_portable", "other.onnx", "not model.portable.onnx, model.onnx or null"),
    ("int8_gate", {"recommended": "other.onnx"}, "is not an INT8 gate record recommending"),
    ("saved_model_signatures", [], "is not an object"),
])
def test_schema_errors_are_one_line_naming_the_file_and_the_key(tmp_path, key, value, words):
    folder = write_info(tmp_path / "export", {**GOOD, key: value})
    with pytest.raises(errors.ConfigError) as caught:
        export_format.read_export_info(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}/export_info.json: key '{key}' ") and words in message, message
    assert message.endswith("export the model again")


def test_the_schema_needs_max_seq_length_for_bert_models_and_single_texts_for_the_bilstm(tmp_path):
    with pytest.raises(errors.ConfigError, match="key 'max_seq_length' is None, not an integer"):
        export_format.read_export_info(write_info(tmp_path / "a", {"model": "tinybert"}))
    with pytest.raises(errors.ConfigError, match="key 'text_inputs' is .* but a bilstm_classifier reads single texts"):
        export_format.read_export_info(write_info(tmp_path / "b", {"model": "bilstm_classifier",
                                                                     "text_inputs": ["text", "text_b"]}))


def test_folders_that_are_not_exports(tmp_path):
    with pytest.raises(errors.MissingFileError, match="does not exist: expected an export folder"):
        export_format.load_export_info(str(tmp_path / "nowhere"))
    with pytest.raises(errors.MissingFileError, match="is not an export folder of this toolkit: no export_info.json"):
        export_format.load_export_info(str(tmp_path))
    write_info(tmp_path / "run" / "export", GOOD)
    with pytest.raises(errors.MissingFileError, match=r"run is a run folder, not an export folder: pass .*run/export$"):
        export_format.read_export_info(str(tmp_path / "run"))
    (tmp_path / "run" / "export" / "export_info.json").write_text("{")
    with pytest.raises(errors.ConfigError, match=r"export_info.json: the export's information is not valid JSON \(Expecting .* at line 1 column 2\): export the model again$"):
        export_format.load_export_info(str(tmp_path / "run" / "export"))
    (tmp_path / "run" / "export" / "export_info.json").write_text("[]")
    with pytest.raises(errors.ConfigError, match="export_info.json: the export's information is not a JSON object: export the model again$"):
        export_format.read_export_info(str(tmp_path / "run" / "export"))
    assert export_format.read_text_inputs(str(tmp_path)) is None  # a Hugging Face folder: unknown


def test_write_export_info_round_trips_atomically(tmp_path):
    export_format.write_export_info(str(tmp_path), GOOD)
    assert export_format.read_export_info(str(tmp_path)) == GOOD and os.listdir(tmp_path) == ["export_info.json"]


# --- padding -----------------------------------------------------------------------------------------


def test_padding_uses_the_given_pad_id_and_masks_by_length():
    rows = [[0, 7, 8, 2], [0, 2]]  # MPNet: <s> = 0 is a real token, <pad> = 1
    np.testing.assert_array_equal(pad(rows, 1), [[0, 7, 8, 2], [0, 2, 1, 1]])
    np.testing.assert_array_equal(attention_mask(rows), [[1, 1, 1, 1], [1, 1, 0, 0]])
    features = bert_features(rows, [[0] * 4, [0, 0]], pad_id=1)
    np.testing.assert_array_equal(features["input_ids"], [[0, 7, 8, 2], [0, 2, 1, 1]])
    np.testing.assert_array_equal(features["attention_mask"], [[1, 1, 1, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(features["token_type_ids"], [[0, 0, 0, 0], [0, 0, 0, 0]])
    assert features["input_ids"].dtype == np.int32 and pad([], 1).shape == (0, 0)
    bert = bert_features([[2, 5, 3], [2, 3]], [[0, 0, 0], [0, 0]], pad_id=0)  # BERT: [PAD] = 0
    np.testing.assert_array_equal(bert["input_ids"], [[2, 5, 3], [2, 3, 0]])


def test_padding_with_an_mpnet_tokenizer(tmp_path):
    from bertdistill.data.tokenization import Tokenizer

    tokens = ["<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "<mask>"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    tokenizer = Tokenizer(str(tmp_path / "vocab.txt"))
    assert tokenizer.family == "mpnet" and tokenizer.pad_id == 1
    ids, types = tokenizer.encode_batch(["the movie", "movie"], max_seq_length=8)
    features = bert_features(ids, types, tokenizer.pad_id)
    np.testing.assert_array_equal(features["input_ids"], [[0, 9, 10, 2], [0, 10, 2, 1]])
    np.testing.assert_array_equal(features["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])


# --- the ONNX runner ---------------------------------------------------------------------------------


def write_graph(path, inputs, dtype=TensorProto.INT64):
    """logits [B, 2] = (sum over tokens of input_ids * attention_mask + 100 * token_type_ids, its negative)."""
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"])]
    total = "masked"
    if "token_type_ids" in inputs:
        nodes += [helper.make_node("Constant", [], ["hundred"], value=helper.make_tensor("h", dtype, [], [100])),
                  helper.make_node("Mul", ["token_type_ids", "hundred"], ["types"]),
                  helper.make_node("Add", ["masked", "types"], ["both"])]
        total = "both"
    nodes += [helper.make_node("Cast", [total], ["as_float"], to=TensorProto.FLOAT),
              helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
              helper.make_node("ReduceSum", ["as_float", "axes"], ["score"], keepdims=1),
              helper.make_node("Neg", ["score"], ["negative"]),
              helper.make_node("Concat", ["score", "negative"], ["logits"], axis=1),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(name, dtype, ["B", "T"]) for name in inputs],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", 2])
                               for name in ("logits", "probabilities")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


FEATURES = bert_features([[0, 4, 5, 2], [0, 6, 2]], [[0, 0, 1, 1], [0, 0, 0]], pad_id=1)


@pytest.mark.parametrize("inputs, dtype, expected", [
    (export_format.BERT_INPUTS, TensorProto.INT64, [11 + 200, 8]),  # BERT: token types read
    (export_format.BERT_INPUTS, TensorProto.INT32, [11 + 200, 8]),  # an older export: int32 ids
    (("input_ids", "attention_mask"), TensorProto.INT64, [11, 8]),  # MPNet: no token_type_ids, padding masked
])
def test_the_runner_feeds_the_graph_its_own_inputs_in_its_own_dtype(tmp_path, inputs, dtype, expected):
    model = OnnxModel(write_graph(tmp_path / "model.onnx", inputs, dtype))
    assert model.input_names == list(inputs)
    fed = model.feed(FEATURES)
    assert list(fed) == list(inputs) and {a.dtype for a in fed.values()} == {np.dtype(np.int64 if dtype ==
                                                                                       TensorProto.INT64 else np.int32)}
    logits = model.predict(FEATURES)
    np.testing.assert_array_equal(logits, np.array([[e, -e] for e in expected], np.float32))
    outputs = model.run(FEATURES)
    np.testing.assert_array_equal(outputs["logits"], logits)
    np.testing.assert_allclose(outputs["probabilities"].sum(1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="no \\['attention_mask'\\] among the features"):
        model.predict({"input_ids": FEATURES["input_ids"], "token_type_ids": FEATURES["token_type_ids"]})


def test_the_runner_refuses_what_is_not_an_exported_classifier(tmp_path):
    with pytest.raises(errors.MissingFileError, match="ONNX model not found"):
        OnnxModel(str(tmp_path / "none.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(errors.ConfigError, match="ONNX Runtime cannot load it"):
        OnnxModel(str(tmp_path / "bad.onnx"))
    floats = write_graph(tmp_path / "floats.onnx", ("input_ids", "attention_mask"), TensorProto.FLOAT)
    with pytest.raises(errors.ConfigError, match="are not int32/int64 token ids"):
        OnnxModel(floats)
