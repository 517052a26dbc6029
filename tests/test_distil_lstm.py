"""distil_lstm/main.py end to end on tiny data: train, test, distil (both losses), resume, raw text."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bertdistill.distill import transfer_set
from bertdistill.export_format import IDS_SIGNATURE, SAVED_MODEL
from tests.conftest import REPO
from tests.serving_loader import run_signatures

SCRIPT = str(REPO / "distil_lstm" / "main.py")
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]
SMALL = ("--embedding_dim=8", "--hidden_size=4", "--dense_size=4", "--train_batch_size=4", "--eval_batch_size=4",
         "--save_checkpoints_steps=2", "--learning_rate=0.01")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """SST-2-format train/dev/test files and a transfer set with made-up teacher logits."""
    root = tmp_path_factory.mktemp("lstm_data")
    rng = np.random.default_rng(0)
    sentences = {}
    for split, count in (("train", 12), ("dev", 8)):
        sentences[split] = [" ".join(rng.choice(WORDS, rng.integers(2, 7))) for _ in range(count)]
        rows = [f"{s}\t{i % 2}" for i, s in enumerate(sentences[split])]
        (root / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "test.tsv").write_text("index\tsentence\n0\tthe movie was fun\n1\tbad plot\n2\tgood\n")
    augmented = sentences["train"] + ["[MASK] " + s for s in sentences["train"]]
    logits = rng.normal(size=(len(augmented), 2)).astype(np.float32)
    labels = [str(i) for i in logits.argmax(1)]
    (root / "augmented.tsv").write_text(transfer_set.header(["0", "1"]) +
                                         transfer_set.format_rows(augmented, labels, logits))
    return root


def run(data_dir, output_dir, *args, check=True):
    command = [sys.executable, SCRIPT, f"--data_dir={data_dir}", f"--output_dir={output_dir}", *SMALL, *args]
    result = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True,
                            text=True, timeout=240)
    if check and result.returncode:
        raise AssertionError(result.stderr[-3000:])
    return result


def read_results(path) -> dict:
    return dict(line.split(" = ") for line in path.read_text().splitlines())


def test_train_then_test_and_raw_text(data_dir, tmp_path):
    out = tmp_path / "train"
    run(data_dir, out, "--mode=train", "--num_train_epochs=2")
    export = out / "export"
    for name in ("saved_model", "model.onnx", "model.int8.onnx", "model.weights.h5", "vocab.txt", "config.json",
                 "labels.json", "export_info.json"):
        assert (export / name).exists(), name
    info = json.loads((export / "export_info.json").read_text())
    assert info["onnx_max_abs_error"] < 1e-4 and info["inputs"] == ["input_ids"]
    assert any(f.startswith("events") for _, _, files in os.walk(out / "tensorboard") for f in files)

    run(data_dir, out, "--mode=test")
    results = read_results(out / "eval_results.txt")
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert float(results["eval_accuracy"]) == pytest.approx(best["val_accuracy"])  # the export is the best model
    run(data_dir, out, "--mode=test", "--eval_split=test")
    probabilities = np.loadtxt(out / "test_results.tsv", delimiter="\t")
    assert probabilities.shape == (3, 2)

    from distil_lstm.predict import TextClassifier
    classifier = TextClassifier(str(export))  # ONNX Runtime on raw text agrees with the Keras predictions
    texts = ["the movie was fun", "bad plot", "good"]
    assert classifier.predict(texts) == [classifier.labels[i] for i in probabilities.argmax(1)]
    np.testing.assert_allclose(np.exp(classifier.logits(["bad plot"]))[0] / np.exp(classifier.logits(["bad plot"])).sum(),
                               probabilities[1], atol=1e-5)
    features = classifier.encoder.features(classifier.encode(texts))  # TensorFlow Serving's loader: ONNX's logits
    served = run_signatures([(str(export / SAVED_MODEL), IDS_SIGNATURE, features)], tmp_path)[0]
    np.testing.assert_allclose(served["logits"], classifier.model.predict(features), atol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "kd"])
def test_distil_on_the_transfer_set_and_resume(data_dir, tmp_path, loss):
    out = tmp_path / loss
    first = run(data_dir, out, "--mode=distil", f"--distill_loss={loss}", "--temperature=2", "--alpha=0.5",
                "--num_train_epochs=1")
    assert "24 examples" in first.stderr  # 12 originals + 12 masked rows of augmented.tsv
    terms = {"mse": ["mse_loss"], "kd": ["soft_loss", "hard_loss"]}[loss]
    for term in terms:  # every loss term is reported on its own
        assert re.search(rf"epoch 0 \(step \d+\): .*\b{term} \d", first.stderr), first.stderr[-2000:]
    steps = int(re.search(r"epoch 0 \(step (\d+)\)", first.stderr).group(1))
    second = run(data_dir, out, "--mode=distil", f"--distill_loss={loss}", "--temperature=2", "--alpha=0.5",
                 "--num_train_epochs=2")
    assert re.search(rf"Resumed from .*ckpt-{steps}\b", second.stderr)
    assert re.search(rf"epoch 1 \(step {2 * steps}\)", second.stderr) and "epoch 0 (step" not in second.stderr
    info = json.loads((out / "export" / "export_info.json").read_text())
    assert info["mode"] == "distil" and info["distill_loss"] == loss and info["onnx_max_abs_error"] < 1e-4
    if loss == "mse":  # a finished run started again only restores the best model and exports it
        (out / "export" / "export_info.json").unlink()
        again = run(data_dir, out, "--mode=distil", "--num_train_epochs=2")
        assert re.search(rf"Resumed from .*ckpt-{2 * steps}\b", again.stderr) and "(step" not in again.stderr
        assert json.loads((out / "export" / "export_info.json").read_text())["best"] == info["best"]


def test_word_vectors_from_a_model(data_dir, tmp_path):
    """--word_vectors=<a BERT folder>: every vocabulary word the model's word pieces cover starts
    from them (the vectors themselves: tests/test_word_vectors.py)."""
    from bertdistill.models import checkpoints
    from bertdistill.models.bert import BertClassifier, BertEncoder
    from tests.bert_fixtures import tiny_config, write_vocab

    model = tmp_path / "bert"
    checkpoints.save_hf_folder(BertClassifier(BertEncoder(tiny_config(hidden_size=8)), 2), str(model),
                               write_vocab(tmp_path / "vocab.txt"), ["0", "1"], True)
    out = tmp_path / "out"
    result = run(data_dir, out, "--mode=train", "--num_train_epochs=1", f"--word_vectors={model}")
    words = (out / "vocab.txt").read_text().splitlines()
    assert f"Word vectors for {len(words) - 3} of {len(words)} vocabulary words from {model}" in result.stderr
    assert (out / "export" / "model.onnx").exists()


def test_distil_errors_are_clear(data_dir, tmp_path):
    missing = run(data_dir, tmp_path / "a", "--mode=distil", f"--augmented_file={tmp_path / 'none.tsv'}", check=False)
    assert missing.returncode and "no transfer set at" in missing.stderr
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\tlogit_0\tlogit_1\ngood film\t1\t0.5\n")
    malformed = run(data_dir, tmp_path / "b", "--mode=distil", f"--augmented_file={bad}", check=False)
    assert malformed.returncode and f"{bad}:2: expected 4 columns, found 3" in malformed.stderr
    assert run(data_dir, tmp_path / "c", check=False).returncode  # no --mode
