"""The rule for outputs, command by command: an output that is or holds an input, replaces a file
inside an input folder, or lies inside an export folder is refused in one line naming its flag,
exit 2, before any work, with nothing written."""
import json

import pytest

from tests.reliability import assert_user_error, fingerprint
from tests.scripts import run_script
from tests.test_generate_dataset import workspace  # noqa: F401

REPLACES = "would replace a file inside the input folder"
IN_EXPORT = "is inside the export folder"


def _export(tmp):
    """A folder that looks like an export (export_info.json, model.onnx, labels, vocabulary)."""
    folder = tmp / "teacher" / "export"
    folder.mkdir(parents=True)
    for name, text in (("export_info.json", "{}"), ("model.onnx", ""), ("config.json", "{}"),
                       ("labels.json", json.dumps(["0", "1"])), ("vocab.txt", "[PAD]\n")):
        (folder / name).write_text(text)
    return folder


def _data(tmp):
    folder = tmp / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbad plot\t0\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nbad plot\t0\n")
    return folder


TEACHER = "{workspace}/teacher"
# (case, script, arguments with {workspace}, {data}, {export}, {alias} filled in, words of the error line)
CASES = [
    ("generate: the input folder's train.tsv", "generate_dataset.py",
     ["--input={data}", f"--model={TEACHER}", "--output={data}/train.tsv"], ["--output=", REPLACES]),
    ("generate: a model folder's vocabulary", "generate_dataset.py",
     ["--input={data}", f"--model={TEACHER}", f"--output={TEACHER}/vocab.txt"], ["--output=", REPLACES]),
    ("augment: the input folder's train.tsv", "tinybert/data_augmentation.py",
     ["--input={data}", f"--model={TEACHER}", "--output={data}/train.tsv"], ["--output=", REPLACES]),
    ("augment: the input through a symlink", "tinybert/data_augmentation.py",
     ["--input={data}/train.tsv", f"--model={TEACHER}", "--output={alias}"], ["--output=", "is also an input"]),
    ("predict: a new file inside the export", "predict.py",
     ["--model_dir={export}", "--output_file={export}/predictions.tsv", "a text"], ["--output_file=", IN_EXPORT]),
    ("predict: the input file through a symlink", "predict.py",
     ["--model_dir={export}", "--input_file={data}/train.tsv", "--output_file={alias}"],
     ["--output_file=", "is also an input"]),
    ("robustness: the input folder's dev.tsv", "evaluate_robustness.py",
     ["--model_dir={export}", "--input={data}", "--output={data}/dev.tsv"], ["--output=", REPLACES]),
    ("teacher: a run folder inside an export", "bert_finetune/run_classifier.py",
     ["--do_train", "--data_dir={data}", f"--init_checkpoint={TEACHER}", "--output_dir={export}/run",
      "--max_seq_length=16"],
     ["--output_dir=", IN_EXPORT]),
    ("bilstm: a run folder inside an export", "distil_lstm/main.py",
     ["--mode=train", "--data_dir={data}", "--output_dir={export}/run"], ["--output_dir=", IN_EXPORT]),
    ("tinybert: the teacher's folder", "tinybert/task_distill.py",
     [f"--teacher_model={TEACHER}", f"--student_config={TEACHER}/config.json", "--data_dir={data}",
      f"--output_dir={TEACHER}", "--max_seq_length=16"], ["--output_dir=", "is also an input"]),
    ("pipeline: a folder inside an export", "run_pipeline.py",
     ["--data_dir={data}", "--output_dir={export}/pipeline"], ["--output_dir=", IN_EXPORT]),
]


@pytest.mark.parametrize("case, script, args, words", CASES, ids=[c[0] for c in CASES])
def test_an_output_over_an_input_or_inside_an_export_is_refused(workspace, tmp_path, case, script, args, words):
    paths = {"workspace": workspace, "data": _data(tmp_path), "export": _export(tmp_path)}
    if any("{alias}" in arg for arg in args):
        (tmp_path / "alias.tsv").symlink_to(paths["data"] / "train.tsv")
        paths["alias"] = tmp_path / "alias.tsv"
    before = fingerprint(tmp_path), fingerprint(workspace)
    result = run_script(script, *[arg.format(**paths) for arg in args], check=False)
    assert_user_error(result, *words)
    assert (fingerprint(tmp_path), fingerprint(workspace)) == before


def test_a_new_file_beside_the_inputs_is_written(workspace, tmp_path):
    data = _data(tmp_path)
    run_script("generate_dataset.py", f"--input={data}", f"--model={workspace / 'teacher'}",
               f"--output={data / 'augmented.tsv'}", "--no_augment", "--max_seq_length=16")
    assert (data / "augmented.tsv").read_text().startswith("sentence\tlabel\tlogit_0")
