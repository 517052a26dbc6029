"""The BiLSTM student: word vocabulary, masking, config round trip, ONNX export."""
import json

import keras
import numpy as np
import onnx
import pytest

from bertdistill.data import pipeline

from bertdistill.export import export
from distil_lstm.model import INT8_OP_TYPES, MaskedPooling, build_bilstm_classifier
from bertdistill.export_format import OnnxModel
from bertdistill.data.words import tokenize
from distil_lstm.vocab import WordVocab


def test_tokenize_keeps_mask_contractions_and_punctuation():
    assert tokenize("It does N'T work, [MASK] really!") == ["it", "does", "n't", "work", ",", "[MASK]", "really", "!"]
    assert tokenize("Café", do_lower_case=False) == ["Café"]


def test_vocab_order_limits_and_round_trip(tmp_path):
    vocab = WordVocab.build(["b a b", "c b a", "d"], min_count=2)
    assert vocab.tokens == ["[PAD]", "[UNK]", "[MASK]", "b", "a"]
    assert WordVocab.build(["b a b", "c b a"], max_size=4).tokens[3:] == ["b"]
    assert vocab.encode("a z [MASK] b") == [4, 1, 2, 3]
    assert vocab.encode("") == [1]
    ragged = vocab.encode_batch(["a b a b", "b"], max_length=3)
    assert ragged.to_list() == [[4, 3, 4], [3]]
    vocab.save(str(tmp_path / "vocab.txt"))
    assert WordVocab.load(str(tmp_path / "vocab.txt")).tokens == vocab.tokens
    with pytest.raises(ValueError, match="must start with"):
        WordVocab(["a", "[PAD]"])


def test_embedding_matrix_takes_known_vectors():
    vocab = WordVocab.build(["good bad"])
    table, found = vocab.embedding_matrix(["bad", "other"], np.ones((2, 3), np.float32))
    assert found == 1 and table.shape == (5, 3)
    np.testing.assert_array_equal(table[vocab.ids["bad"]], 1.0)
    np.testing.assert_array_equal(table[0], 0.0)
    assert np.abs(table[vocab.ids["good"]]).max() <= 0.05


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
def test_padding_does_not_change_logits_and_config_round_trips(pooling):
    model = build_bilstm_classifier(50, 3, embedding_dim=8, hidden_size=6, dense_size=5, pooling=pooling)
    padded = np.array([[5, 6, 7, 0, 0], [9, 8, 7, 6, 5]], np.int32)
    together = model({"input_ids": padded}).numpy()
    alone = model({"input_ids": padded[:1, :3]}).numpy()
    np.testing.assert_allclose(together[0], alone[0], atol=1e-6)
    twin = keras.Model.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    np.testing.assert_allclose(twin({"input_ids": padded}).numpy(), together, atol=1e-6)
    assert together.dtype == np.float32


def masked_bidirectional_reference(pooling: str) -> keras.Model:
    """The textbook masked BiLSTM (`mask_zero` + `keras.layers.Bidirectional`) of the same sizes."""
    input_ids = keras.Input(shape=(None,), dtype="int32", name="input_ids")
    x = keras.layers.Embedding(50, 8, mask_zero=True)(input_ids)
    x = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=pooling != "last"))(x)
    if pooling != "last":
        x = MaskedPooling(pooling)(x)
    x = keras.layers.Dense(5, activation="relu")(x)
    return keras.Model({"input_ids": input_ids}, keras.layers.Dense(3)(x))


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
def test_same_logits_as_a_masked_bidirectional_lstm(pooling):
    model = build_bilstm_classifier(50, 3, embedding_dim=8, hidden_size=6, dense_size=5, pooling=pooling)
    reference = masked_bidirectional_reference(pooling)
    ours = {variable.path: variable.numpy() for variable in model.weights}
    reference.set_weights([ours[path] for path in (
        "embeddings/embeddings",
        *(f"{direction}_lstm/lstm_cell/{name}" for direction in ("forward", "backward")
          for name in ("kernel", "recurrent_kernel", "bias")),
        "dense/kernel", "dense/bias", "logits/kernel", "logits/bias")])
    ids = np.array([[5, 6, 7, 0, 0], [9, 8, 7, 6, 5], [4, 0, 0, 0, 0]], np.int32)
    np.testing.assert_allclose(model({"input_ids": ids}).numpy(), reference({"input_ids": ids}).numpy(),
                               rtol=1e-5, atol=1e-7)


def test_onnx_export_uses_fused_lstm_operators(tmp_path):
    model = build_bilstm_classifier(30, 2, embedding_dim=8, hidden_size=6, dense_size=5)
    export.export_onnx(model, str(tmp_path / "model.onnx"), ("input_ids",))
    operators = {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "LSTM" in operators and "Loop" not in operators and "Scan" not in operators


def test_parameter_count_of_the_reference_size():
    # 15k words x 300 + a 300-unit BiLSTM + 400 ReLU units: the ~5.9M of the reference student.
    assert 5.5e6 < build_bilstm_classifier(15000, 2).count_params() < 6.5e6


def test_mixed_bfloat16_gives_float32_logits():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_bilstm_classifier(20, 2, embedding_dim=8, hidden_size=4, dense_size=4)
        logits = model({"input_ids": np.array([[3, 4, 0]], np.int32)})
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert logits.dtype == "float32" and np.isfinite(logits.numpy()).all()


def test_export_round_trip_keras_savedmodel_onnx(tmp_path):
    import tensorflow as tf

    model = build_bilstm_classifier(30, 2, embedding_dim=8, hidden_size=6, dense_size=5)
    ids = np.array([[3, 4, 5, 6], [7, 8, 0, 0], [9, 0, 0, 0]], np.int32)
    folder = tmp_path / "export"
    export.export_folder(model, str(folder), sample={"input_ids": ids}, info={}, input_names=("input_ids",),
                         int8_op_types=INT8_OP_TYPES)
    expected = model({"input_ids": ids}).numpy()
    onnx_logits = OnnxModel(str(folder / "model.onnx")).predict({"input_ids": ids})
    np.testing.assert_allclose(onnx_logits, expected, atol=1e-4)
    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"](
        input_ids=tf.constant(ids))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-5)
    assert json.loads((folder / "export_info.json").read_text())["inputs"] == ["input_ids"]
    int8 = OnnxModel(str(folder / "model.int8.onnx")).predict({"input_ids": ids})
    np.testing.assert_allclose(int8, expected, atol=0.02)
    graph = onnx.load(str(folder / "model.int8.onnx")).graph
    assert "DynamicQuantizeLSTM" in {node.op_type for node in graph.node}
    embedding = [t for t in graph.initializer if tuple(t.dims) == (30, 8)]  # the table, 8-bit
    assert embedding and all(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in embedding)


def test_predict_logits_keeps_input_order():
    features = pipeline.Features(input_ids=pipeline.to_ragged([[1, 2, 3], [4], [5, 6]]),
                                 token_type_ids=pipeline.to_ragged([[0, 0, 0], [0], [0, 0]]),
                                 label_ids=np.zeros(3, np.int32), guids=["a", "b", "c"], pad_id=0)
    inputs = {name: keras.Input((None,), dtype="int32", name=name)
              for name in ("input_ids", "attention_mask", "token_type_ids")}
    total = keras.layers.Lambda(lambda t: keras.ops.sum(keras.ops.cast(t, "float32"), axis=1, keepdims=True))(
        inputs["input_ids"])
    model = keras.Model(inputs, total)
    np.testing.assert_array_equal(pipeline.predict_logits(model, features, batch_size=2)[:, 0], [6, 4, 11])
