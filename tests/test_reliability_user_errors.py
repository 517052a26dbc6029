"""The user errors that were tracebacks, late failures or silent wrong results: each class is one
`error:` line, exit 2, before any work (nothing of the run written), or a run that now works."""
import json
import shutil
import subprocess
import sys

import pytest

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertEncoder
from tests.bert_fixtures import TINY_VOCAB, tiny_config
from tests.conftest import REPO
from tests.reliability import assert_user_error, fingerprint
from tests.scripts import run_script
from tests.test_tinybert import TEACHER, workspace  # noqa: F401

DISTILL = "tinybert/task_distill.py"
CLASSIFIER = "bert_finetune/run_classifier.py"


def distill(workspace, out, *args):
    """task_distill.py on the tiny teacher; `args` name the student (and may name another teacher)."""
    return run_script(DISTILL, f"--teacher_model={workspace / 'teacher'}", f"--data_dir={workspace / 'data'}",
                      f"--output_dir={out}", "--max_seq_length=16", *args, check=False)


def _student(workspace, tmp, **sizes):
    path = tmp / "student.json"
    path.write_text(json.dumps(tiny_config(**{**TEACHER, "num_hidden_layers": 2, **sizes}).to_dict()))
    return [f"--student_config={path}"]


def _layer_map(workspace, tmp):
    path = tmp / "map.json"
    path.write_text(json.dumps([{"teacher_layer": 9, "student_layer": 1, "feature": "hidden"}]))
    return [f"--student_config={workspace / 'student.json'}", f"--layer_map={path}"]


# (case, flags (workspace, tmp) -> list, words of the error line)
SHAPES = [
    ("layer map entry out of range", _layer_map, ["map.json: entry 0", "teacher_layer", "1..4"]),
    ("other head count", lambda w, t: _student(w, t, num_attention_heads=4), ["equal head counts"]),
    ("rule with an unknown feature", lambda w, t: [f"--student_config={w / 'student.json'}", "--layer_map=uniform:hiden"],
     ["layer map rule 'uniform:hiden'", "distinct features"]),
    ("width under teacher_layers", lambda w, t: [*_student(w, t, hidden_size=8, intermediate_size=16), "--dry_run"],
     ["--student_init=teacher_layers", "hidden_size 16 (teacher) vs 8 (student)"]),
]


@pytest.mark.parametrize("case, extra, words", SHAPES, ids=[c[0] for c in SHAPES])
def test_layer_map_and_student_shape_mistakes_are_one_line_before_the_run(workspace, tmp_path, case, extra, words):
    out = tmp_path / "out"
    result = distill(workspace, out, *extra(workspace, tmp_path))
    assert_user_error(result, *words)
    assert not out.exists()  # not even run_manifest.json


def test_the_student_reads_the_teachers_vocabulary(workspace, tmp_path):
    config = tiny_config(**{**TEACHER, "num_hidden_layers": 2, "vocab_size": 30522})  # a default-size student
    (tmp_path / "student.json").write_text(json.dumps(config.to_dict()))
    result = distill(workspace, tmp_path / "out", "--dry_run", f"--student_config={tmp_path / 'student.json'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vocab_size 20" in result.stderr
    # Same size, other tokens: the student is not fed the teacher's ids (its embeddings would be read
    # with wrong ids) but tokenizes with its own vocabulary, so stage 2 needs the transfer set's logits.
    other = tmp_path / "other_student"
    checkpoints.save_hf_encoder(BertEncoder(tiny_config(**{**TEACHER, "num_hidden_layers": 2})), str(other),
                                str(workspace / "vocab.txt"), True)
    (other / "vocab.txt").write_text("\n".join(TINY_VOCAB[:5] + TINY_VOCAB[5:][::-1]) + "\n")
    before = fingerprint(tmp_path)
    result = distill(workspace, tmp_path / "out2", f"--student_model={other}")
    assert_user_error(result, "own vocabulary", "--augmented_file")
    assert fingerprint(tmp_path) == before


def test_a_truncated_model_safetensors_is_one_line(workspace, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(workspace / "teacher", teacher)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = distill(workspace, tmp_path / "out", f"--student_config={workspace / 'student.json'}",
                     f"--teacher_model={teacher}")
    assert_user_error(result, "model.safetensors is not a complete safetensors file", "truncated")
    assert not (tmp_path / "out").exists()


def test_a_corpus_of_blank_lines_is_refused(workspace, tmp_path):
    (tmp_path / "corpus.txt").write_text("\n  \n\n")
    result = run_script("tinybert/general_distill.py", f"--corpus={tmp_path / 'corpus.txt'}",
                        f"--teacher_model={workspace / 'teacher'}", f"--student_config={workspace / 'student.json'}",
                        f"--output_dir={tmp_path / 'out'}", "--max_seq_length=16", check=False)
    assert_user_error(result, "--corpus=", "every line is blank")
    assert not (tmp_path / "out").exists()


NUMBERS = [
    (DISTILL, "--temperature=nan", ["--temperature=nan must be a finite number"]),
    (DISTILL, "--num_train_epochs=inf", ["--num_train_epochs=inf must be a finite number"]),
    (CLASSIFIER, "--seed=-1", ["--seed=-1", "range [0, 4294967295]"]),
    (CLASSIFIER, "--seed=99999999999", ["--seed=99999999999", "range [0, 4294967295]"]),
]


@pytest.mark.parametrize("script, flag, words", NUMBERS, ids=[c[1] for c in NUMBERS])
def test_numbers_no_run_can_use_are_refused_when_parsed(tmp_path, script, flag, words):
    result = run_script(script, f"--output_dir={tmp_path / 'out'}", flag, check=False)
    assert_user_error(result, *words)
    assert not (tmp_path / "out").exists()


def test_a_single_label_is_refused(tmp_path):
    result = run_script(CLASSIFIER, "--do_train", "--task_name=tsv", "--labels=pos", f"--data_dir={tmp_path}",
                        f"--output_dir={tmp_path / 'out'}", check=False)
    assert_user_error(result, "--labels=pos", "at least two labels")


def test_an_uncased_vocabulary_without_lower_casing_is_refused(workspace, tmp_path):
    (tmp_path / "data").mkdir()
    rows = ["The Movie Was Great\t1", "Bad Plot\t0", "Not Good Fun\t1", "A Dull Film\t0"]
    for split in ("train", "dev"):
        (tmp_path / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (tmp_path / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    args = ("--do_train", f"--data_dir={tmp_path / 'data'}", f"--bert_config_file={tmp_path / 'config.json'}",
            f"--vocab_file={workspace / 'vocab.txt'}", f"--output_dir={tmp_path / 'out'}", "--max_seq_length=16")
    result = run_script(CLASSIFIER, *args, "--nodo_lower_case", check=False)
    assert_user_error(result, "are [UNK] with --do_lower_case=False", "pass --do_lower_case=True")
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_on_predict_stdin_is_one_line(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    process = subprocess.run([sys.executable, str(REPO / "predict.py"), f"--model_dir={export}"],
                             input=b"good\n\xff\xfe bad\n", capture_output=True)
    result = subprocess.CompletedProcess(process.args, process.returncode, process.stdout.decode(),
                                         process.stderr.decode())
    assert_user_error(result, "<stdin>:2: not valid UTF-8")
