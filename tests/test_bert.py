"""Keras BERT: shapes, masking, config round trips, mixed precision."""
import json

import keras
import numpy as np
import pytest

from bertdistill.models.bert import BertClassifier, BertConfig, BertEncoder, checkpoint_variables
from tests.bert_fixtures import tiny_batch, tiny_config


def test_config_reads_google_and_hf_json(tmp_path):
    google = {"vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 16, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 16, "type_vocab_size": 2,
              "initializer_range": 0.02}
    hf = {**google, "architectures": ["BertModel"], "model_type": "bert", "layer_norm_eps": 1e-12,
          "pad_token_id": 0, "transformers_version": "4.8.2"}
    (tmp_path / "bert_config.json").write_text(json.dumps(google))
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert BertConfig.from_json_file(str(tmp_path / "bert_config.json")) == tiny_config()
    assert BertConfig.from_json_file(str(tmp_path / "config.json")) == tiny_config()


@pytest.mark.parametrize("bad, message", [({"hidden_size": 9}, "multiple of"), ({"hidden_act": "swish"}, "hidden_act"),
                                          ({"bogus_key": 1}, "unknown BERT config keys")])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dict({**tiny_config().to_dict(), **bad})


def test_config_json_error_names_file_and_line(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text('{\n "vocab_size": 20,\n oops\n}')
    with pytest.raises(ValueError, match=r"bert_config\.json:3: invalid JSON"):
        BertConfig.from_json_file(str(path))


def test_encoder_returns_all_layers_and_masked_scores():
    encoder = BertEncoder(tiny_config(), output_hidden_states=True, output_attentions=True)
    out = encoder(tiny_batch())
    assert out["sequence_output"].shape == (2, 6, 8)
    assert out["pooled_output"].shape == (2, 8)
    assert len(out["hidden_states"]) == 3 and len(out["attention_scores"]) == 2
    np.testing.assert_allclose(out["hidden_states"][-1], out["sequence_output"])
    scores, probs = np.asarray(out["attention_scores"][0]), np.asarray(out["attention_probs"][0])
    assert scores.shape == probs.shape == (2, 2, 6, 6)
    assert np.all(scores[1, :, :, 5] < -1000) and np.all(probs[1, :, :, 5] < 1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, np.exp(scores) / np.exp(scores).sum(-1, keepdims=True), rtol=1e-4, atol=1e-7)


def test_padding_does_not_change_real_tokens():
    encoder = BertEncoder(tiny_config())
    batch = tiny_batch()
    short = {k: v[1:, :5] for k, v in batch.items()}
    padded = encoder(batch)["sequence_output"][1, :5]
    np.testing.assert_allclose(encoder(short)["sequence_output"][0], padded, atol=1e-5)


def test_classifier_config_round_trip_keeps_outputs():
    model = BertClassifier(BertEncoder(tiny_config(), output_attentions=True), num_labels=3)
    clone = BertClassifier.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert clone.encoder.output_attentions and clone.encoder.config == tiny_config()
    np.testing.assert_allclose(model(tiny_batch()), clone(tiny_batch()), atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert restored.num_labels == 3


def test_checkpoint_names_cover_every_weight_once():
    model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    names = checkpoint_variables(model)
    assert len({id(v) for v in names.values()}) == len(model.weights) == len(names)
    assert names["bert/encoder/layer_1/attention/self/query/kernel"].shape == (8, 8)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_logits_and_layer_norm(policy):
    try:
        keras.mixed_precision.set_global_policy(policy)
        encoder = BertEncoder(tiny_config(), output_attentions=True)
        model = BertClassifier(encoder, num_labels=2)
        logits = model(tiny_batch())
        assert logits.dtype == "float32" and np.all(np.isfinite(logits))
        assert encoder(tiny_batch())["sequence_output"].dtype == policy.removeprefix("mixed_")
        assert encoder.transformer_layers[0].output_layer_norm.compute_dtype == "float32"
        assert encoder(tiny_batch())["attention_probs"][0].dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mean_pooling_averages_real_tokens_only():
    encoder = BertEncoder(tiny_config())
    model = BertClassifier(encoder, num_labels=2, dropout=0.0, pooling="mean")
    batch = tiny_batch()
    sequence = np.asarray(encoder(batch)["sequence_output"])
    mean = sequence[1, :5].mean(0)  # the second row has 5 real tokens
    head = model.head
    expected = mean @ head.kernel.numpy() + head.bias.numpy()
    np.testing.assert_allclose(np.asarray(model(batch))[1], expected, atol=1e-5)
    clone = BertClassifier.from_config(model.get_config())
    assert clone.pooling == "mean"
    with pytest.raises(ValueError, match="pooling must be one of"):
        BertClassifier(encoder, num_labels=2, pooling="max")
