"""bert_finetune/run_classifier.py: each class of bad input is one line on stderr, exit 2, no
traceback and no output created or damaged; a reused --output_dir with other data is refused;
a run killed with SIGKILL inside an epoch (by the trainer's test-only hook, at a known checkpoint)
and restarted ends with the weights and metrics of an uninterrupted run."""
import json
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.reliability import assert_user_error, fingerprint
from tests.test_run_classifier import CONFIG, SCRIPT, WORDS, latest_checkpoint_step, workspace  # noqa: F401
from tests.scripts import assert_killed, killed_at_step, run_script


def run(workspace, output_dir, *args, check=False, init=True, **popen):
    init_flag = [f"--init_checkpoint={workspace / 'tiny'}"] if init else []
    return run_script(SCRIPT, f"--data_dir={workspace / 'data'}", *init_flag, f"--output_dir={output_dir}",
                      "--max_seq_length=32", "--train_batch_size=4", "--eval_batch_size=4", "--do_export=false",
                      *args, check=check, **popen)


@pytest.fixture(scope="module")
def finished(workspace, tmp_path_factory):
    """A finished training run (1 epoch) in its folder."""
    out = tmp_path_factory.mktemp("finished") / "out"
    run(workspace, out, "--do_train", "--do_eval", "--num_train_epochs=1", check=True)
    return out


def _other_data(workspace, tmp):
    other = tmp / "other_data"
    shutil.copytree(workspace / "data", other)
    (other / "train.tsv").write_text("sentence\tlabel\nthe film was fun\t1\nbad plot\t0\n")
    return [f"--data_dir={other}"]


def _run_folder(workspace, tmp):
    shutil.copytree(workspace / "tiny", tmp / "run" / "export")
    return [f"--init_checkpoint={tmp / 'run'}"]


def _config_without_vocab_size(workspace, tmp):
    (tmp / "config.json").write_text(json.dumps({k: v for k, v in CONFIG.items() if k != "vocab_size"}))
    return [f"--bert_config_file={tmp / 'config.json'}", f"--vocab_file={workspace / 'vocab.txt'}"]


def _header_only_dev(workspace, tmp):
    data = tmp / "data"
    shutil.copytree(workspace / "data", data)
    (data / "dev.tsv").write_text("sentence\tlabel\n")
    return [f"--data_dir={data}"]


# (case, extra flags or a function (workspace, tmp) -> flags, --init_checkpoint given, words of the error line)
CASES = [
    ("flag value", ["--learning_rate=-1"], True, ["--learning_rate=-1.0", "must be positive"]),
    ("output is an input", lambda w, t: [f"--output_dir={w / 'data'}"], True, ["--output_dir=", "is also an input"]),
    ("run folder as model", _run_folder, False, ["--init_checkpoint=", "is a run folder", "export"]),
    ("config missing key", _config_without_vocab_size, False, ["config.json", "missing key 'vocab_size'"]),
    ("empty split", _header_only_dev, True, ["dev.tsv has no examples"]),
]


@pytest.mark.parametrize("case, extra, init, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(workspace, finished, tmp_path, case, extra, init, words):
    args = extra(workspace, tmp_path) if callable(extra) else extra
    before = fingerprint(finished), fingerprint(workspace)
    result = run(workspace, finished, "--do_train", "--do_eval", "--num_train_epochs=1", *args, init=init)
    assert_user_error(result, *words)
    assert (fingerprint(finished), fingerprint(workspace)) == before


def test_reused_output_dir_with_other_data_is_refused(workspace, finished, tmp_path):
    before = fingerprint(finished)
    result = run(workspace, finished, "--do_train", "--do_eval", "--num_train_epochs=1",
                 *_other_data(workspace, tmp_path))
    assert_user_error(result, "holds another run", "data_dir:", "is no longer used", "is new", "--overwrite_output_dir")
    assert fingerprint(finished) == before  # neither resumed nor its best model restored


def variables(checkpoint_dir) -> dict:
    """The model weights of the latest checkpoint. Keras 3 models are not tracked under their own
    checkpoint key (`model/...` is absent): their weights are saved as the optimizer's
    `_trainable_variables`, which are compared along with any `model`/`student` entries."""
    reader = tf.train.load_checkpoint(str(checkpoint_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if any(key in name for key in ("model", "student", "_trainable_variables"))}


def assert_same_run(a, b):
    assert json.loads((a / "best" / "metrics.json").read_text()) == json.loads((b / "best" / "metrics.json").read_text())
    weights_a, weights_b = variables(a / "checkpoints"), variables(b / "checkpoints")
    assert weights_a.keys() == weights_b.keys() and len(weights_a) > 4
    for name, value in weights_a.items():
        np.testing.assert_allclose(weights_b[name], value, atol=1e-5, err_msg=name)


def assert_killed_after(result, output_dir, step: int) -> None:
    """`result`, a run started with `killed_at_step(...)`, died right after its checkpoint of `step`
    (the latest one), after epoch 0's evaluation had kept a best model."""
    assert_killed(result)
    assert latest_checkpoint_step(output_dir / "checkpoints") == step
    assert json.loads((output_dir / "best" / "metrics.json").read_text())["epoch"] == 0


def resumed_step(result) -> int:
    return int(re.search(r"Resumed from .*ckpt-(\d+)", result.stderr).group(1))


def test_killed_teacher_resumes_to_the_uninterrupted_result(workspace, tmp_path):
    data = tmp_path / "data"  # 48 rows in bucketed batches of at most 4: 14 steps an epoch
    data.mkdir()
    rng = np.random.default_rng(3)
    for split, count in (("train", 48), ("dev", 8)):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))}\t{i % 2}" for i in range(count)]
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    args = ("--do_train", "--do_eval", "--num_train_epochs=3", "--save_checkpoints_steps=2", "--learning_rate=1e-3",
            f"--data_dir={data}")
    run(workspace, tmp_path / "a", *args, check=True)
    # Killed after the first checkpoint of a step >= 15: ckpt-16, the 2nd batch of epoch 1 (after
    # epoch 0's evaluation), so the resumed run skips into an epoch and keeps epoch 0's best model.
    assert_killed_after(run(workspace, tmp_path / "b", *args, env=killed_at_step(15)), tmp_path / "b", 16)
    result = run(workspace, tmp_path / "b", *args, check=True)
    assert resumed_step(result) == 16
    assert_same_run(tmp_path / "a", tmp_path / "b")
