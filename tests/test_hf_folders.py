"""Hugging Face folders of classifiers (BERT and MPNet, cls and mean pooling) say what they are,
and transformers reproduces their logits from raw text.

The layout and the toolkit's own loader are checked without PyTorch. The transformers check runs
`TRANSFORMERS_USER` (the lines of docs/reference.md) in an interpreter with transformers and torch:
`$BERTDISTILL_TORCH_PYTHON`, else this one when it has torch; otherwise it is skipped.
"""
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier
from bertdistill.models.encoders import build_encoder
from bertdistill.serving.predictor import WordPieceEncoder
from tests.bert_fixtures import TINY_VOCAB, tiny_config
from tests.export_fixtures import BERT_MAX_SEQ_LENGTH, tiny_exports
from tests.test_mpnet import MPNET_VOCAB, tiny_mpnet_config

LABELS = ["a", "b", "c"]
MAX_SEQ_LENGTH = 8
TEXTS = ["the movie was great", "bad plot", "The Film Was Not Good", "plots", "",
         "the movie was fun but the plot was dull and the film was not good at all ."]  # truncated
ARCHITECTURES = {("bert", "cls"): "BertForSequenceClassification", ("bert", "mean"): "BertModel",
                 ("mpnet", "cls"): "MPNetForSequenceClassification", ("mpnet", "mean"): "MPNetModel"}

# What a transformers user runs on a folder (the lines docs/reference.md gives for a mean-pooled model).
TRANSFORMERS_USER = """
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

job = json.load(open(sys.argv[1]))
results = {}
for folder in job["folders"]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(job["texts"], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        if AutoConfig.from_pretrained(folder).architectures[0].endswith("ForSequenceClassification"):
            logits = AutoModelForSequenceClassification.from_pretrained(folder).eval()(**batch).logits
        else:
            encoder = AutoModel.from_pretrained(folder).eval()
            head = load_file(f"{folder}/classifier.safetensors")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            logits = pooled @ head["classifier.weight"].T + head["classifier.bias"]
    results[folder] = {"input_ids": batch["input_ids"].tolist(), "logits": logits.tolist()}
json.dump(results, open(sys.argv[2], "w"))
"""


def _classifier(family: str, pooling: str) -> BertClassifier:
    keras.utils.set_random_seed(3)
    # A wide initialisation: clearly different logits per text. MPNet with the relative position
    # buckets transformers hard-codes (32, up to distance 128).
    config = (tiny_config(initializer_range=0.5) if family == "bert" else
              tiny_mpnet_config(initializer_range=0.5, relative_attention_num_buckets=32,
                                relative_attention_max_distance=128))
    return BertClassifier(build_encoder(config), num_labels=len(LABELS), pooling=pooling)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[tuple[str, str], tuple[BertClassifier, str]]:
    """(family, pooling) -> (Keras classifier, its Hugging Face folder)."""
    root = tmp_path_factory.mktemp("hf")
    vocabs = {"bert": root / "bert_vocab.txt", "mpnet": root / "mpnet_vocab.txt"}
    vocabs["bert"].write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    vocabs["mpnet"].write_text("\n".join(MPNET_VOCAB) + "\n", encoding="utf-8")
    out = {}
    for family, pooling in ARCHITECTURES:
        model = _classifier(family, pooling)
        folder = str(root / f"{family}_{pooling}")
        checkpoints.save_hf_folder(model, folder, str(vocabs[family]), LABELS, True, MAX_SEQ_LENGTH)
        out[family, pooling] = model, folder
    return out


def _keras_run(model: BertClassifier, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, logits) of the Keras model on TEXTS, encoded as the predictor encodes them."""
    encoder = WordPieceEncoder(os.path.join(folder, "vocab.txt"), True, MAX_SEQ_LENGTH)
    features = encoder.features(encoder.encode(TEXTS))
    return features["input_ids"], keras.ops.convert_to_numpy(model(features, training=False))


def test_folders_say_what_they_are(folders):
    for (family, pooling), (_, folder) in folders.items():
        config = json.loads(open(os.path.join(folder, "config.json")).read())
        assert config["architectures"] == [ARCHITECTURES[family, pooling]]
        assert config["model_type"] == family and config["classifier_pooling"] == pooling
        assert config["id2label"] == {"0": "a", "1": "b", "2": "c"}
        assert json.loads(open(os.path.join(folder, "tokenizer_config.json")).read())["model_max_length"] == 8
        weights = load_file(os.path.join(folder, "model.safetensors"))
        head_file = os.path.join(folder, checkpoints.HF_HEAD_FILE)
        if pooling == "cls":
            assert not os.path.exists(head_file)
            head = "classifier.weight" if family == "bert" else "classifier.out_proj.weight"
            assert weights[head].shape == (3, 8)
        else:  # an encoder, and the head beside it
            assert not [name for name in weights if name.startswith("classifier")]
            assert {name: array.shape for name, array in load_file(head_file).items()} == {
                "classifier.weight": (3, 8), "classifier.bias": (3,)}


def test_toolkit_reads_both_layouts_of_mean_pooled_folders(folders, tmp_path):
    """The folders above, and the earlier layout of a mean-pooled model: the head inside
    model.safetensors under a classifier architecture (BERT) or the encoder's (MPNet)."""
    for (family, pooling), (model, folder) in folders.items():
        _, expected = _keras_run(model, folder)
        layouts = [folder]
        if pooling == "mean":
            earlier = str(tmp_path / f"{family}_earlier")
            os.makedirs(earlier)
            for name in ("vocab.txt", "tokenizer_config.json"):
                with open(os.path.join(folder, name), "rb") as src, open(os.path.join(earlier, name), "wb") as dst:
                    dst.write(src.read())
            config = json.loads(open(os.path.join(folder, "config.json")).read())
            config["architectures"] = ["BertForSequenceClassification" if family == "bert" else "MPNetModel"]
            with open(os.path.join(earlier, "config.json"), "w") as f:
                json.dump(config, f)
            save_file({**load_file(os.path.join(folder, "model.safetensors")),
                       **load_file(os.path.join(folder, checkpoints.HF_HEAD_FILE))},
                      os.path.join(earlier, "model.safetensors"))
            layouts.append(earlier)
        for path in layouts:
            teacher = checkpoints.load_teacher(path, labels=LABELS)
            assert teacher.model.pooling == pooling, path
            _, logits = _keras_run(teacher.model, path)
            np.testing.assert_allclose(logits, expected, atol=1e-6, err_msg=path)


def test_a_folder_rewritten_with_a_cls_model_keeps_no_mean_head(folders, tmp_path):
    (mean, folder), (cls, _) = folders["bert", "mean"], folders["bert", "cls"]
    target = str(tmp_path / "model")
    for model in (mean, cls):
        checkpoints.save_hf_folder(model, target, os.path.join(folder, "vocab.txt"), LABELS, True)
    assert not os.path.exists(os.path.join(target, checkpoints.HF_HEAD_FILE))
    np.testing.assert_allclose(_keras_run(checkpoints.load_teacher(target, labels=LABELS).model, target)[1],
                               _keras_run(cls, target)[1], atol=1e-6)


def test_mpnet_buckets_transformers_ignores_are_named(tmp_path, caplog):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(MPNET_VOCAB) + "\n", encoding="utf-8")
    model = BertClassifier(build_encoder(tiny_mpnet_config(relative_attention_num_buckets=8)), 3)
    checkpoints.save_hf_folder(model, str(tmp_path / "mpnet"), str(vocab), LABELS, True)
    assert "transformers' MPNet uses 32 relative position buckets" in caplog.text
    assert json.loads((tmp_path / "mpnet" / "tokenizer_config.json").read_text())["model_max_length"] == 18


def test_export_folder_truncates_as_trained(tmp_path_factory):
    folder = tiny_exports(tmp_path_factory)["bert"].folder
    config = json.loads(open(os.path.join(folder, "tokenizer_config.json")).read())
    assert config["model_max_length"] == BERT_MAX_SEQ_LENGTH


def _torch_python() -> str | None:
    """An interpreter with transformers and torch, or None."""
    return os.environ.get("BERTDISTILL_TORCH_PYTHON") or (sys.executable if importlib.util.find_spec("torch") else None)


def test_transformers_reproduces_every_pooling(folders, tmp_path):
    python = _torch_python()
    if python is None or not os.path.isfile(python):
        pytest.skip("no interpreter with transformers and torch (set BERTDISTILL_TORCH_PYTHON)")
    job, answer = tmp_path / "job.json", tmp_path / "answer.json"
    job.write_text(json.dumps({"folders": [folder for _, folder in folders.values()], "texts": TEXTS}))
    script = tmp_path / "transformers_user.py"
    script.write_text(TRANSFORMERS_USER)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([python, str(script), str(job), str(answer)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(answer.read_text())
    for (family, pooling), (model, folder) in folders.items():
        ids, expected = _keras_run(model, folder)
        np.testing.assert_array_equal(results[folder]["input_ids"], ids, err_msg=f"{family} {pooling}")
        np.testing.assert_allclose(results[folder]["logits"], expected, atol=1e-4, err_msg=f"{family} {pooling}")
