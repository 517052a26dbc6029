"""bert_finetune/run_classifier.py end to end on a tiny random BERT and 8-line TSVs: train, eval,
predict, export and reload; evaluation of a trained folder; kill -9 and resume; a user's own TSV
(pairs) and CSV; a random initialisation from --bert_config_file; mirrored over two CPUs."""
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from bertdistill.models import checkpoints

from bertdistill.training import locks
from bertdistill.models.bert import BertClassifier, BertConfig, BertEncoder
from tests.bert_fixtures import TINY_VOCAB, write_vocab
from tests.scripts import assert_killed, error_lines, killed_at_step, run_script

SCRIPT = "bert_finetune/run_classifier.py"
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]
CONFIG = dict(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny Hugging Face BERT folder (hidden 32, 2 layers) and SST-2-format data."""
    root = tmp_path_factory.mktemp("rc")
    vocab = write_vocab(root / "vocab.txt")
    checkpoints.save_hf_folder(BertClassifier(BertEncoder(BertConfig(**CONFIG)), 2), str(root / "tiny"), vocab,
                               ["0", "1"], True)
    (root / "bert_config.json").write_text(json.dumps(CONFIG))
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))}\t{i % 2}" for i in range(8)]
        (root / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "data" / "test.tsv").write_text("index\tsentence\n0\tthe movie was fun\n1\tbad plot\n2\tgood\n")
    return root


def run(workspace, output_dir, *args, check=True, init=True, **popen):
    init_flag = [f"--init_checkpoint={workspace / 'tiny'}"] if init else []
    return run_script(SCRIPT, f"--data_dir={workspace / 'data'}", *init_flag, f"--output_dir={output_dir}",
                      "--max_seq_length=32", "--train_batch_size=4", "--eval_batch_size=4", "--predict_batch_size=2",
                      *args, check=check, **popen)


def read_results(path) -> dict:
    return dict(line.split(" = ") for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def trained(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "out"
    run(workspace, out, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs=2",
        "--save_checkpoints_steps=2", "--learning_rate=1e-3", "--classifier_pooling=mean")
    return out


def test_train_eval_predict_export_and_reload(workspace, trained, tmp_path):
    results = read_results(trained / "eval_results.txt")
    best = json.loads((trained / "best" / "metrics.json").read_text())
    assert set(results) == {"eval_accuracy", "eval_loss", "global_step", "eval_examples"}
    assert int(results["global_step"]) == best["global_step"] and int(results["eval_examples"]) == 8
    assert float(results["eval_accuracy"]) == pytest.approx(best["val_accuracy"])  # the best-by-dev model
    probabilities = np.loadtxt(trained / "test_results.tsv", delimiter="\t")
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    export = trained / "export"
    for name in ("saved_model", "model.onnx", "model.int8.onnx", "model.safetensors", "config.json", "vocab.txt",
                 "labels.json", "export_info.json"):
        assert (export / name).exists(), name
    info = json.loads((export / "export_info.json").read_text())
    assert info["onnx_max_abs_error"] < 1e-4 and info["best"] == best
    assert (trained / "checkpoints" / "checkpoint").exists()
    assert any(f.startswith("events") for _, _, files in os.walk(trained / "tensorboard") for f in files)

    assert json.loads((export / "config.json").read_text())["classifier_pooling"] == "mean"
    again = tmp_path / "reloaded"  # the export folder is a valid --init_checkpoint, pooling included
    result = run(workspace, again, "--do_eval", f"--init_checkpoint={export}")
    assert "Using the fine-tuned model" in result.stderr
    reloaded = read_results(again / "eval_results.txt")
    assert float(reloaded["eval_accuracy"]) == float(results["eval_accuracy"])
    np.testing.assert_allclose(float(reloaded["eval_loss"]), float(results["eval_loss"]), rtol=1e-4)


def test_eval_and_predict_alone_use_the_trained_model_of_the_output_dir(workspace, trained, tmp_path):
    before = read_results(trained / "eval_results.txt")
    probabilities = np.loadtxt(trained / "test_results.tsv", delimiter="\t")
    result = run(workspace, trained, "--do_eval", "--do_predict", "--classifier_pooling=mean")
    assert "Using the best dev model of" in result.stderr
    after = read_results(trained / "eval_results.txt")
    assert after["global_step"] == before["global_step"] and after["eval_accuracy"] == before["eval_accuracy"]
    np.testing.assert_allclose(np.loadtxt(trained / "test_results.tsv", delimiter="\t"), probabilities, atol=1e-6)

    empty = run(workspace, tmp_path / "nothing", "--do_eval", check=False, init=False)  # nothing trained: refused
    assert empty.returncode == 2 and "holds no trained model" in empty.stderr
    assert not (tmp_path / "nothing").exists()  # and nothing created


def test_export_alone_re_exports_the_trained_model_of_the_output_dir(workspace, trained, tmp_path):
    from safetensors.numpy import load_file
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    shutil.rmtree(copy / "export")
    result = run(workspace, copy, "--do_export", "--classifier_pooling=mean")
    assert "Using the best dev model of" in result.stderr
    info = json.loads((copy / "export" / "export_info.json").read_text())
    assert info["onnx_max_abs_error"] < 1e-4 and "int8_gate" in info
    original = load_file(trained / "export" / "model.safetensors")
    again = load_file(copy / "export" / "model.safetensors")
    assert original.keys() == again.keys()
    for name in original:
        np.testing.assert_array_equal(original[name], again[name])

    empty = run(workspace, tmp_path / "nothing", "--do_export", check=False, init=False)
    assert empty.returncode == 2 and "holds no trained model" in empty.stderr
    assert not (tmp_path / "nothing").exists()


def latest_checkpoint_step(directory) -> int:
    """The step of the checkpoint that CheckpointManager's state file names as latest (0 when none)."""
    state = directory / "checkpoint"
    found = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', state.read_text(), re.M) if state.exists() else None
    return int(found.group(1)) if found else 0


def test_killed_run_resumes_from_latest_checkpoint(workspace, tmp_path):
    out = tmp_path / "out"
    args = ("--do_train", "--num_train_epochs=8", "--save_checkpoints_steps=10", "--do_export=false",
            "--log_every_steps=1")  # 8 rows, bucketed batches of at most 4: 3 steps an epoch, 24 in all
    assert_killed(run(workspace, out, *args, check=False, env=killed_at_step(20)))
    assert latest_checkpoint_step(out / "checkpoints") == 20  # killed right after its second checkpoint
    assert (out / locks.LOCK_NAME).exists()  # the killed run's lock file: the OS released the lock
    result = run(workspace, out, *args)  # without the kill hook: the same command a user runs again
    assert re.search(r"Resumed from .*ckpt-20\b", result.stderr)
    total = int(re.search(r"(\d+) steps, output in", result.stderr).group(1))
    steps = [int(s) for s in re.findall(r"step (\d+)/\d+", result.stderr)]
    assert total == 24 and steps == list(range(21, 25))  # no step redone, none skipped
    assert (out / "checkpoints" / f"ckpt-{total}.index").exists()
    assert not (out / locks.LOCK_NAME).exists()


def test_a_run_on_a_folder_in_use_is_refused_in_one_line_naming_the_live_run(workspace, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    locks.lock_folder(str(out))  # this process stands for the live run
    try:
        result = run(workspace, out, "--do_train", "--overwrite_output_dir", check=False)
        assert sorted(os.listdir(out)) == sorted([locks.LOCK_NAME, "notes.txt"])  # nothing deleted or written
    finally:
        locks.release_folder(str(out))
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"--output_dir={out} is in use by another run (pid {os.getpid()}: {sys.executable}" in lines[0]


def test_a_users_tsv_with_pairs_and_a_csv(workspace, tmp_path):
    rng = np.random.default_rng(1)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for split in ("train", "dev", "test"):
        rows = [f"{i}\t{' '.join(rng.choice(WORDS, 3))}\t{' '.join(rng.choice(WORDS, 2))}\t{['neg', 'pos'][i % 2]}"
                for i in range(6)]
        (pairs / f"{split}.tsv").write_text("id\tpremise\thypothesis\tverdict\n" + "\n".join(rows) + "\n")
    run(workspace, tmp_path / "out_pairs", f"--data_dir={pairs}", "--task_name=tsv", "--labels=neg,pos",
        "--text_a_column=premise", "--text_b_column=hypothesis", "--label_column=verdict", "--do_train",
        "--do_eval", "--do_predict", "--num_train_epochs=1", "--do_export=false")
    assert int(read_results(tmp_path / "out_pairs" / "eval_results.txt")["eval_examples"]) == 6
    assert np.loadtxt(tmp_path / "out_pairs" / "test_results.tsv", delimiter="\t").shape == (6, 2)

    csv = tmp_path / "csv"
    csv.mkdir()
    for split in ("train", "dev"):  # no header: columns by index; a quoted comma inside the text
        rows = [f'"{" ".join(rng.choice(WORDS, 3))}, {rng.choice(WORDS)}",{i % 2}' for i in range(6)]
        (csv / f"{split}.csv").write_text("\n".join(rows) + "\n")
    run(workspace, tmp_path / "out_csv", f"--data_dir={csv}", "--task_name=csv", "--labels=0,1", "--nohas_header",
        "--text_a_column=0", "--label_column=1", "--do_train", "--do_eval", "--num_train_epochs=1",
        "--do_export=false")
    assert int(read_results(tmp_path / "out_csv" / "eval_results.txt")["eval_examples"]) == 6


def test_random_initialisation_from_a_bert_config(workspace, tmp_path):
    result = run(workspace, tmp_path / "out", f"--bert_config_file={workspace / 'bert_config.json'}",
                 f"--vocab_file={workspace / 'vocab.txt'}", "--do_train", "--do_eval", "--num_train_epochs=1",
                 "--do_export=false", init=False)
    assert "training from a random initialisation" in result.stderr
    results = read_results(tmp_path / "out" / "eval_results.txt")
    accuracy = float(results["eval_accuracy"])
    assert int(results["eval_examples"]) == 8 and min(abs(accuracy - k / 8) for k in range(9)) < 1e-6  # k of 8 rows
    # Weights drawn with stddev 0.02 and two steps at 5e-5: logits near 0, so about ln 2 on two classes.
    assert abs(float(results["eval_loss"]) - np.log(2)) < 0.05


def test_mirrored_strategy_over_two_logical_cpus(workspace, tmp_path):
    launcher = tmp_path / "two_cpus.py"
    launcher.write_text(
        "import runpy, sys\nimport tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    out = tmp_path / "out"
    result = run_script(str(launcher), SCRIPT, f"--data_dir={workspace / 'data'}",
                        f"--init_checkpoint={workspace / 'tiny'}", f"--output_dir={out}", "--max_seq_length=32",
                        "--train_batch_size=4", "--do_train", "--do_eval", "--num_train_epochs=1",
                        "--do_export=false", "--distribution_strategy=mirrored")
    assert "MirroredStrategy with devices" in result.stderr and "CPU:1" in result.stderr
    assert np.isfinite(float(read_results(out / "eval_results.txt")["eval_loss"]))
