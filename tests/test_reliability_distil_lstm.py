"""distil_lstm/main.py: bad input -> one line, exit 2, nothing created or damaged; a vocabulary is
reused only by the run that made it; divergence stops at its step with no export; a run killed with
SIGKILL inside an epoch and restarted ends with the weights and metrics of an uninterrupted run (dropout on)."""
import pytest

from bertdistill.distill import transfer_set
from tests.reliability import assert_user_error, fingerprint
from tests.scripts import killed_at_step, run_script
from tests.test_distil_lstm import SMALL, data_dir  # noqa: F401
from tests.test_reliability_run_classifier import assert_killed_after, assert_same_run, resumed_step

SCRIPT = "distil_lstm/main.py"


def run(data_dir, output_dir, *args, check=False, **popen):
    return run_script(SCRIPT, f"--data_dir={data_dir}", f"--output_dir={output_dir}", *SMALL, *args, check=check,
                      **popen)


def _left_vocabulary(data_dir, out):
    out.mkdir(parents=True, exist_ok=True)  # what a failed run of an older version left: a 3-token vocabulary
    (out / "vocab.txt").write_text("[PAD]\n[UNK]\n[MASK]\n")
    return ["--mode=train"]


def _all_bad_transfer_set(data_dir, out):
    bad = out.parent / "bad.tsv"
    bad.write_text("sentence\tlabel\tlogit_0\tlogit_1\ngood film\t7\t0\t1\nbad\t1\tx\t0\n")
    return ["--mode=distil", f"--augmented_file={bad}", "--skip_bad_rows"]


def _run_folder_as_model(data_dir, out):
    (out.parent / "run" / "export").mkdir(parents=True)
    (out.parent / "run" / "export" / "config.json").write_text("{}")
    return ["--mode=test", f"--model_dir={out.parent / 'run'}"]


def _vectors_of_another_size(data_dir, out):
    glove = out.parent / "glove.txt"
    glove.write_text("good 0.1 0.2 0.3\n")
    return ["--mode=train", f"--word_vectors={glove}"]


CASES = [
    ("flag value", lambda d, o: ["--mode=train", "--dropout=1.5"], ["--dropout=1.5", "between 0.0 and 0.99"]),
    ("output is an input", lambda d, o: ["--mode=train", f"--output_dir={d}"], ["--output_dir=", "is also an input"]),
    ("folder of another run", _left_vocabulary, ["already holds files (vocab.txt) but no run_manifest.json"]),
    ("skip mode, no valid row", _all_bad_transfer_set, ["bad.tsv: no valid rows: all 2 rows are bad",
                                                         "bad.tsv:2: unknown label"]),
    ("run folder as model", _run_folder_as_model, ["is a run folder, not an export folder: pass", "export"]),
    ("word vectors of another size", _vectors_of_another_size, ["--embedding_dim=8", "gives 3-d vectors"]),
    ("word vectors missing", lambda d, o: ["--mode=train", f"--word_vectors={o.parent / 'none'}"],
     ["--word_vectors=", "does not exist"]),
]


@pytest.mark.parametrize("case, extra, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(data_dir, tmp_path, case, extra, words):
    out = tmp_path / "out"
    args = extra(data_dir, out)
    before = fingerprint(tmp_path), fingerprint(data_dir)
    assert_user_error(run(data_dir, out, "--num_train_epochs=1", *args), *words)
    assert (fingerprint(tmp_path), fingerprint(data_dir)) == before


def test_divergence_stops_at_its_step_and_exports_nothing(data_dir, tmp_path):
    huge = tmp_path / "huge.tsv"
    huge.write_text(transfer_set.header(["0", "1"]) + "good film\t1\t-3e38\t3e38\nbad plot\t0\t3e38\t-3e38\n")
    out = tmp_path / "out"
    result = run(data_dir, out, "--mode=distil", f"--augmented_file={huge}", "--learning_rate=1e30",
                 "--num_train_epochs=2")
    line = assert_user_error(result, "training diverged at step 1", "nothing was exported",
                             "the learning rate is not the cause")
    assert "lower --learning_rate" not in line  # extreme teacher logits, not the learning rate, made the NaN
    assert not (out / "export").exists() and not list(out.glob(".export*"))


def test_killed_student_resumes_to_the_uninterrupted_result(data_dir, tmp_path):
    args = ("--mode=train", "--num_train_epochs=4", "--train_batch_size=2", "--save_checkpoints_steps=2",
            "--dropout=0.3", "--do_export=false")  # 12 rows in bucketed batches of at most 2: 7 steps an epoch
    run(data_dir, tmp_path / "a", *args, check=True)
    # Killed right after ckpt-8: the 1st batch of epoch 1, after epoch 0's evaluation.
    assert_killed_after(run(data_dir, tmp_path / "b", *args, env=killed_at_step(8)), tmp_path / "b", 8)
    result = run(data_dir, tmp_path / "b", *args, check=True)
    assert resumed_step(result) == 8
    assert_same_run(tmp_path / "a", tmp_path / "b")
