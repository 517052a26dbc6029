"""generate_dataset.py and tinybert/data_augmentation.py: bad input -> one line, exit 2, the
previous output intact and nothing else created; --skip_bad_rows skips, counts and reports."""
import shutil

import pytest

from tests.reliability import assert_user_error, fingerprint
from tests.scripts import run_script
from tests.test_generate_dataset import workspace  # noqa: F401

GENERATE = ("generate_dataset.py", "--augment_factor=2", "--batch_size=8", "--replacement=teacher_embeddings",
            "--max_seq_length=16")
AUGMENT = ("tinybert/data_augmentation.py", "--augment_factor=2", "--batch_size=8", "--max_seq_length=16")


def _run_folder(workspace, tmp):
    shutil.copytree(workspace / "teacher", tmp / "run" / "export")
    return [f"--model={tmp / 'run'}"]


def _odd_teacher(file, edit):
    """Flags giving --model the teacher and a copy of it whose `file` is rewritten by `edit`."""
    def flags(workspace, tmp):
        shutil.copytree(workspace / "teacher", tmp / "odd_teacher")
        path = tmp / "odd_teacher" / file
        path.write_text(edit(path.read_text()))
        return [f"--model={workspace / 'teacher'},{tmp / 'odd_teacher'}"]
    return flags


def _all_bad(workspace, tmp):
    (tmp / "bad.tsv").write_text("sentence\tlabel\ngood\t7\nbad\t9\n")
    return [f"--input={tmp / 'bad.tsv'}", "--skip_bad_rows"]


# (script, case, extra flags or a function (workspace, tmp) -> flags, words of the error line)
CASES = [
    (GENERATE, "probability", ["--p_mask=2"], ["--p_mask=2.0 must be between 0.0 and 1.0"]),
    (GENERATE, "shard index", ["--num_shards=2", "--shard_index=2"], ["--shard_index=2 is outside 0..1"]),
    (GENERATE, "output is the input", lambda w, t: [f"--output={w / 'train.tsv'}"], ["--output=", "is also an input"]),
    (GENERATE, "run folder as model", _run_folder, ["--model=", "is a run folder", "export"]),
    (GENERATE, "teachers' vocabularies differ", _odd_teacher("vocab.txt", lambda text: text.replace("movie", "cinema")),
     ["--model: teacher", "odd_teacher differs from", "in its vocabulary;"]),
    (GENERATE, "teachers' lower-casing differs", _odd_teacher("tokenizer_config.json", lambda text: text.replace(
        "true", "false")), ["--model: teacher", "odd_teacher differs from", "in its lower-casing;"]),
    (GENERATE, "teachers' labels differ", _odd_teacher("labels.json", lambda text: '["neg", "pos"]'),
     ["--model: teacher", "odd_teacher differs from", "in its labels;"]),
    (AUGMENT, "augment factor", ["--augment_factor=-1"], ["--augment_factor=-1 must be >= 0"]),
    (AUGMENT, "output is the input", lambda w, t: [f"--output={w / 'train.tsv'}"], ["--output=", "is also an input"]),
    (AUGMENT, "skip mode, no valid row", _all_bad, ["bad.tsv: no valid rows: all 2 rows are bad"]),
]


@pytest.mark.parametrize("script, case, extra, words", CASES, ids=[f"{c[0][0]}-{c[1]}" for c in CASES])
def test_bad_input_is_one_line_and_keeps_the_previous_output(workspace, tmp_path, script, case, extra, words):
    output = tmp_path / "out" / "augmented.tsv"
    output.parent.mkdir()
    output.write_text("previous run\n")
    args = extra(workspace, tmp_path) if callable(extra) else extra
    before = fingerprint(tmp_path), fingerprint(workspace)
    result = run_script(script[0], f"--input={workspace / 'train.tsv'}", f"--model={workspace / 'teacher'}",
                        f"--output={output}", *script[1:], *args, check=False)
    assert_user_error(result, *words)
    assert (fingerprint(tmp_path), fingerprint(workspace)) == before


def test_skip_bad_rows_counts_and_reports_per_file(workspace, tmp_path):
    rows = (workspace / "train.tsv").read_text().splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(rows[:5] + ["broken row without label", "x\t9"] + rows[5:]) + "\n")
    output = tmp_path / "augmented.tsv"
    args = (f"--input={tmp_path / 'train.tsv'}", f"--model={workspace / 'teacher'}", f"--output={output}",
            "--no_augment", "--skip_bad_rows")
    result = run_script(GENERATE[0], *args, *GENERATE[1:])
    assert "Skipped 2 bad rows of" in result.stderr and "train.tsv:6: expected 2 columns" in result.stderr
    assert len(output.read_text().splitlines()) == 1 + len(rows) - 1
    refused = run_script(GENERATE[0], *args[:-1], *GENERATE[1:], check=False)
    assert_user_error(refused, "train.tsv:6: expected 2 columns")
