"""Every training script run as docs/reference.md scales it out: two worker processes on localhost, each
with `TF_CONFIG` and `--distribution_strategy=multi_worker_mirrored`, one shared `--output_dir` and
one intra-op thread, end with the checkpointed weights of a single-process run of the same command
(the same global batches; dropout off so that the maths is the same)."""
import json
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill.distill import tinybert

from bertdistill.models import checkpoints

from bertdistill.training import locks
from tests.bert_fixtures import tiny_config, write_vocab
from tests.scripts import finish, run_script, worker_environments

WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TEACHER = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=32)
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """SST-2-format data (8 rows a split), a corpus, a tiny BERT config and vocabulary, a tiny
    teacher folder (Hugging Face files + labels.json) and a 2-layer student config of its width."""
    root = tmp_path_factory.mktemp("multi_worker")
    vocab = write_vocab(root / "vocab.txt")
    (root / "bert_config.json").write_text(json.dumps(tiny_config(**NO_DROPOUT).to_dict()))
    keras.utils.set_random_seed(0)
    teacher = tinybert.distillation_classifier(tiny_config(**TEACHER), 2, "mean")
    checkpoints.save_hf_folder(teacher, str(root / "teacher"), vocab, ["0", "1"], True)
    (root / "teacher" / "labels.json").write_text(json.dumps(["0", "1"]))
    student = tiny_config(**{**TEACHER, **NO_DROPOUT, "num_hidden_layers": 2})
    (root / "student.json").write_text(json.dumps(student.to_dict()))
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))}\t{i % 2}" for i in range(8)]
        (root / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "corpus.txt").write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(12)))
    return root


def commands(root) -> dict[str, list[str]]:
    """Each training script's command (without --output_dir): a few steps of global batch 4."""
    common = ["--train_batch_size=4", "--max_seq_length=16", "--log_every_steps=1"]
    return {
        "bert_finetune/run_classifier.py": [
            "--do_train", f"--data_dir={root / 'data'}", f"--bert_config_file={root / 'bert_config.json'}",
            f"--vocab_file={root / 'vocab.txt'}", "--num_train_epochs=1", "--learning_rate=0.01", "--do_export=false",
            *common],
        "distil_lstm/main.py": [
            "--mode=train", f"--data_dir={root / 'data'}", "--embedding_dim=8", "--hidden_size=4", "--dense_size=4",
            "--dropout=0", "--num_train_epochs=1", "--learning_rate=0.01", "--do_export=false", *common],
        "tinybert/task_distill.py": [
            f"--teacher_model={root / 'teacher'}", f"--student_config={root / 'student.json'}",
            f"--data_dir={root / 'data'}", "--stage=both", "--intermediate_epochs=1", "--prediction_epochs=1",
            "--intermediate_learning_rate=0.01", "--prediction_learning_rate=0.01", "--do_export=false", *common],
        "tinybert/general_distill.py": [
            f"--teacher_model={root / 'teacher'}", f"--student_config={root / 'student.json'}",
            f"--corpus={root / 'corpus.txt'}", "--max_steps=2", "--shuffle_buffer=4", "--learning_rate=0.01", *common],
    }


SCRIPTS = ("bert_finetune/run_classifier.py", "distil_lstm/main.py", "tinybert/task_distill.py",
           "tinybert/general_distill.py")
CHECKPOINTS = {"tinybert/task_distill.py": ("intermediate/checkpoints", "prediction/checkpoints")}


def checkpoint_values(folder) -> dict[str, np.ndarray]:
    """Every variable of the latest checkpoint in `folder` (model, optimizer, step)."""
    reader = tf.train.load_checkpoint(str(folder))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_two_workers_as_documented_equal_a_single_process(workspace, tmp_path, script):
    args = commands(workspace)[script]
    single, shared = tmp_path / "single", tmp_path / "workers"
    pipes = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    runs = [run_script(script, *args, f"--output_dir={single}", env=ONE_THREAD, **pipes)]
    runs += [run_script(script, *args, f"--output_dir={shared}", "--distribution_strategy=multi_worker_mirrored",
                        env={**ONE_THREAD, **env}, **pipes) for env in worker_environments(2)]
    for name, (code, err) in zip(("single", "worker 0", "worker 1"), finish(runs, timeout=300)):
        assert code == 0, f"{name} exited {code}:\n{err[-3000:]}"
    for folder in CHECKPOINTS.get(script, ("checkpoints",)):
        expected, found = checkpoint_values(single / folder), checkpoint_values(shared / folder)
        assert found.keys() == expected.keys(), folder
        assert int(found["step/.ATTRIBUTES/VARIABLE_VALUE"]) >= 2, folder
        for name, value in expected.items():
            np.testing.assert_allclose(found[name], value, atol=1e-5, rtol=0, err_msg=f"{folder}: {name}")
    assert not (shared / locks.LOCK_NAME).exists()  # released at the end
