"""bert_finetune/run_classifier.py end to end on a tiny random BERT and an 8-line TSV."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bertdistill import checkpoints
from bertdistill.bert import BertClassifier, BertConfig, BertEncoder
from tests.bert_fixtures import TINY_VOCAB, write_vocab
from tests.conftest import REPO

SCRIPT = str(REPO / "bert_finetune" / "run_classifier.py")
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny Hugging Face BERT folder (hidden 32, 2 layers) and SST-2-format data."""
    root = tmp_path_factory.mktemp("rc")
    vocab = write_vocab(root / "vocab.txt")
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    checkpoints.save_hf_folder(BertClassifier(BertEncoder(config), 2), str(root / "tiny"), vocab, ["0", "1"], True)
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))}\t{i % 2}" for i in range(8)]
        (root / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "data" / "test.tsv").write_text("index\tsentence\n0\tthe movie was fun\n1\tbad plot\n2\tgood\n")
    return root


def run(workspace, output_dir, *args, check=True, **popen):
    command = [sys.executable, SCRIPT, f"--data_dir={workspace / 'data'}", f"--init_checkpoint={workspace / 'tiny'}",
               f"--output_dir={output_dir}", "--max_seq_length=32", "--train_batch_size=4", "--eval_batch_size=4",
               "--predict_batch_size=2", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if popen:
        return subprocess.Popen(command, env=env, **popen)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    if check and result.returncode:
        raise AssertionError(result.stderr[-3000:])
    return result


def read_results(path) -> dict:
    return dict(line.split(" = ") for line in path.read_text().splitlines())


def test_train_eval_predict_export_and_reload(workspace, tmp_path):
    out = tmp_path / "out"
    run(workspace, out, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs=2",
        "--save_checkpoints_steps=2", "--learning_rate=1e-3", "--classifier_pooling=mean")
    results = read_results(out / "eval_results.txt")
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert set(results) == {"eval_accuracy", "eval_loss", "global_step"}
    assert int(results["global_step"]) == best["global_step"]  # the evaluated model is the best-by-dev one
    assert float(results["eval_accuracy"]) == pytest.approx(best["val_accuracy"])
    probabilities = np.loadtxt(out / "test_results.tsv", delimiter="\t")
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    export = out / "export"
    for name in ("saved_model", "model.onnx", "model.int8.onnx", "model.safetensors", "config.json", "vocab.txt",
                 "labels.json", "export_info.json"):
        assert (export / name).exists(), name
    assert json.loads((export / "export_info.json").read_text())["onnx_max_abs_error"] < 1e-4
    assert (out / "best" / "model.weights.h5").exists() and (out / "checkpoints" / "checkpoint").exists()
    assert any(f.startswith("events") for _, _, files in os.walk(out / "tensorboard") for f in files)

    assert json.loads((export / "config.json").read_text())["classifier_pooling"] == "mean"
    again = tmp_path / "reloaded"  # the export folder is a valid --init_checkpoint, pooling included
    run(workspace, again, "--do_eval", f"--init_checkpoint={export}")
    reloaded = read_results(again / "eval_results.txt")
    assert float(reloaded["eval_accuracy"]) == float(results["eval_accuracy"])
    np.testing.assert_allclose(float(reloaded["eval_loss"]), float(results["eval_loss"]), rtol=1e-4)


def latest_checkpoint_step(directory) -> int:
    """The step of the checkpoint that CheckpointManager's state file names as latest (0 when none)."""
    state = directory / "checkpoint"
    found = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', state.read_text(), re.M) if state.exists() else None
    return int(found.group(1)) if found else 0


def test_killed_run_resumes_from_latest_checkpoint(workspace, tmp_path):
    out = tmp_path / "out"
    args = ("--do_train", "--num_train_epochs=60", "--save_checkpoints_steps=10", "--do_export=false")
    process = run(workspace, out, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint_step(out / "checkpoints") < 20:  # the state file is updated last, atomically
        assert process.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = run(workspace, out, *args, "--do_eval")
    resumed = re.search(r"Resumed from .*ckpt-(\d+)", result.stderr)
    assert resumed and int(resumed.group(1)) >= 20
    steps_per_epoch = int(re.search(r"(\d+) steps/epoch", result.stderr).group(1))
    first_epoch = int(re.search(r"^Epoch (\d+)/", result.stdout, re.M).group(1))
    assert first_epoch == int(resumed.group(1)) // steps_per_epoch + 1  # finished epochs are not redone
    assert (out / "checkpoints" / f"ckpt-{60 * steps_per_epoch}.index").exists()


@pytest.mark.parametrize("args, message", [
    ((), "At least one of --do_train, --do_eval or --do_predict"),
    (("--do_train", "--max_seq_length=100"), "max_seq_length=100 exceeds the model's max_position_embeddings=64"),
    (("--do_eval", "--nodo_lower_case"), "trained with do_lower_case=True"),
    (("--do_eval", "--init_checkpoint=/nonexistent/bert_model.ckpt"), "needs --bert_config_file and --vocab_file"),
])
def test_flag_validation_fails_fast(workspace, tmp_path, args, message):
    result = run(workspace, tmp_path / "out", *args, check=False)
    assert result.returncode != 0 and message in result.stderr + result.stdout


def test_mirrored_strategy_over_two_logical_cpus(workspace, tmp_path):
    launcher = tmp_path / "two_cpus.py"
    launcher.write_text(
        "import runpy, sys\nimport tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    out = tmp_path / "out"
    command = [sys.executable, str(launcher), SCRIPT, f"--data_dir={workspace / 'data'}",
               f"--init_checkpoint={workspace / 'tiny'}", f"--output_dir={out}", "--max_seq_length=32",
               "--train_batch_size=4", "--do_train", "--do_eval", "--num_train_epochs=1", "--do_export=false",
               "--distribution_strategy=mirrored"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy with devices" in result.stderr and "CPU:1" in result.stderr
    assert np.isfinite(float(read_results(out / "eval_results.txt")["eval_loss"]))
