"""TinyBERT task distillation: the tasks in-process (stage-2 logits from the data or the teacher,
the student's start from teacher layers), and tinybert/task_distill.py end to end on a tiny
teacher: dry run, both stages with export, stage switch, kill -9 and resume in each stage."""
import json
import re

import keras
import numpy as np
import pytest

from bertdistill.distill import layer_map, tinybert

from bertdistill.models import checkpoints
from tests.bert_fixtures import tiny_batch, tiny_config, write_vocab
from tests.reliability import fingerprint
from tests.scripts import assert_killed, error_lines, killed_at_step, run_script

SCRIPT = "tinybert/task_distill.py"
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]
TEACHER = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 4-layer teacher folder (Hugging Face files + labels.json), a 2-layer student config,
    SST-2-format data and an augmented TSV with teacher-logit columns."""
    root = tmp_path_factory.mktemp("tinybert")
    vocab = write_vocab(root / "vocab.txt")
    keras.utils.set_random_seed(0)
    teacher = tinybert.distillation_classifier(tiny_config(**TEACHER), 2, "mean")
    checkpoints.save_hf_folder(teacher, str(root / "teacher"), vocab, ["0", "1"], True)
    (root / "teacher" / "labels.json").write_text(json.dumps(["0", "1"]))
    (root / "student.json").write_text(json.dumps(tiny_config(**{**TEACHER, "num_hidden_layers": 2}).to_dict()))
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 8)))}\t{i % 2}" for i in range(8)]
        (root / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def run(workspace, output_dir, *args, check=True, student=None, **popen):
    student = student or f"--student_config={workspace / 'student.json'}"
    return run_script(SCRIPT, f"--teacher_model={workspace / 'teacher'}", student,
                      f"--data_dir={workspace / 'data'}", f"--output_dir={output_dir}", "--max_seq_length=16",
                      "--train_batch_size=4", "--eval_batch_size=4", "--save_checkpoints_steps=2", *args,
                      check=check, **popen)


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_soft_cross_entropy(teacher, student, temperature):
    """-sum_c softmax(t / T) log softmax(s / T), mean over the batch, times T^2 (docs/losses.md)."""
    return -(np.exp(np_log_softmax(np.asarray(teacher) / temperature))
             * np_log_softmax(np.asarray(student) / temperature)).sum(-1).mean() * temperature ** 2


def test_prediction_task_takes_logits_from_the_batch_or_runs_the_teacher():
    keras.utils.set_random_seed(1)
    teacher = tinybert.distillation_classifier(tiny_config(), 2, "cls")
    student = tinybert.distillation_classifier(tiny_config(num_hidden_layers=1, hidden_dropout_prob=0.0,
                                                           attention_probs_dropout_prob=0.0), 2, "cls")
    x = tiny_batch()
    labels = np.array([0, 1])
    logits = np.asarray(student(x, training=True))  # no dropout: the logits the task computes
    stored = np.array([[3.0, -1.0], [0.5, 0.25]], np.float32)
    task = tinybert.PredictionTask(student, teacher, temperature=2.0)
    from_batch = float(task.loss_terms(x, {"label_ids": labels, "teacher_logits": stored})["soft_cross_entropy"])
    np.testing.assert_allclose(from_batch, np_soft_cross_entropy(stored, logits, 2.0), rtol=1e-5)
    online = float(task.loss_terms(x, labels)["soft_cross_entropy"])  # no logits in the batch: the teacher runs
    teacher_logits = np.asarray(teacher(x, training=False))
    assert np.abs(teacher_logits - stored).max() > 0.1
    np.testing.assert_allclose(online, np_soft_cross_entropy(teacher_logits, logits, 2.0), rtol=1e-5)
    with pytest.raises(ValueError, match="no teacher"):
        tinybert.PredictionTask(student, None).loss_terms(x, labels)

    mixed = tinybert.PredictionTask(student, None, temperature=2.0, hard_label_weight=0.25).loss_terms(
        x, {"label_ids": labels, "teacher_logits": stored})
    hard = -np_log_softmax(logits)[np.arange(2), labels].mean()
    np.testing.assert_allclose(float(mixed["soft_cross_entropy"]), 0.75 * np_soft_cross_entropy(stored, logits, 2.0),
                               rtol=1e-5)
    np.testing.assert_allclose(float(mixed["hard_cross_entropy"]), 0.25 * hard, rtol=1e-5)
    gold = tinybert.PredictionTask(student, None, hard_label_weight=1.0).loss_terms(x, labels)
    assert set(gold) == {"hard_cross_entropy"}  # plain fine-tuning needs no teacher
    np.testing.assert_allclose(float(gold["hard_cross_entropy"]), hard, rtol=1e-5)


def test_joint_stage_2_without_batch_logits_runs_the_teacher_once_for_logits_and_features(monkeypatch):
    keras.utils.set_random_seed(1)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = tinybert.distillation_classifier(tiny_config(**no_dropout), 2, "cls")
    student = tinybert.distillation_classifier(tiny_config(num_hidden_layers=1, **no_dropout), 2, "cls")
    matches = layer_map.resolve_layer_map("uniform", teacher.encoder.config, student.encoder.config)
    projections = layer_map.FeatureProjections(matches, teacher.encoder.config, student.encoder.config)
    intermediate = tinybert.IntermediateTask(teacher.encoder, student, student.encoder, matches, projections)
    prediction = tinybert.PredictionTask(student, teacher, temperature=2.0)
    joint = tinybert.JointTask(prediction, intermediate, 0.5, teacher=teacher)
    x, labels = tiny_batch(), np.array([0, 1])

    calls = []
    encoder_call = type(teacher.encoder).call
    monkeypatch.setattr(type(teacher.encoder), "call",
                        lambda self, *a, **k: calls.append(self is teacher.encoder) or encoder_call(self, *a, **k))
    terms = joint.loss_terms(x, labels)
    assert calls.count(True) == 1  # one pass of the teacher's encoder (and one of the student's)
    monkeypatch.undo()
    np.testing.assert_allclose(float(terms["soft_cross_entropy"]),
                               float(prediction.loss_terms(x, labels)["soft_cross_entropy"]), rtol=1e-5)
    alone = intermediate.loss_terms(x, labels)
    assert set(terms) == {"soft_cross_entropy", *alone}
    for name in alone:
        np.testing.assert_allclose(np.asarray(terms[name]), 0.5 * np.asarray(alone[name]), rtol=1e-5)


def test_student_from_teacher_layers_copies_them_and_the_head():
    keras.utils.set_random_seed(3)
    teacher = tinybert.distillation_classifier(tiny_config(**TEACHER), 2, "mean")
    student = tinybert.distillation_classifier(tiny_config(**{**TEACHER, "num_hidden_layers": 2}), 2, "mean")
    matches = layer_map.resolve_layer_map("uniform", teacher.encoder.config, student.encoder.config)
    layers = layer_map.teacher_layers_for_init(matches, teacher.encoder.config, student.encoder.config)
    assert layers == [2, 4]
    tinybert.init_from_teacher(student, teacher, layers)
    for s, t in zip(student.encoder.transformer_layers, [teacher.encoder.transformer_layers[i - 1] for i in layers]):
        for a, b in zip(s.weights, t.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(student.head.weights, teacher.head.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    twin = tinybert.with_distillation_outputs(teacher)
    np.testing.assert_allclose(twin(tiny_batch()), teacher(tiny_batch()), atol=1e-6)


def test_dry_run_prints_the_layer_map_and_parameter_counts(workspace, tmp_path):
    result = run(workspace, tmp_path / "out", "--dry_run")
    assert re.search(r"\b2\s+1\s+hidden\b", result.stdout) and re.search(r"\b4\s+2\s+attention\b", result.stdout)
    assert "teacher parameters:" in result.stdout and "student parameters:" in result.stdout
    assert "start from teacher layers [2, 4]" in result.stdout
    assert not (tmp_path / "out").exists()
    hidden = run(workspace, tmp_path / "out", "--dry_run", "--layer_map=uniform:hidden").stdout
    assert re.search(r"\b4\s+2\s+hidden\b", hidden) and not re.search(r"\b(attention|embeddings)\b", hidden)
    bad = run(workspace, tmp_path / "out", "--dry_run", "--stage=both", "--num_train_epochs=2", check=False)
    assert bad.returncode == 2 and "--num_train_epochs applies to a single --stage" in error_lines(bad)[0]


def test_both_stages_export_a_student_the_toolkit_can_load(workspace, tmp_path):
    out = tmp_path / "out"
    augmented = tmp_path / "augmented.tsv"
    rows = (workspace / "data" / "train.tsv").read_text().splitlines()[1:]
    augmented.write_text("sentence\tlabel\tlogit_0\tlogit_1\n" + "".join(f"{r}\t0.5\t-0.5\n" for r in rows))
    result = run(workspace, out, f"--augmented_file={augmented}", "--intermediate_epochs=2", "--prediction_epochs=2",
                 "--intermediate_learning_rate=1e-3", "--prediction_learning_rate=1e-3", "--log_every_steps=1")
    assert "with teacher logits" in result.stderr and "Stage 2 starts from stage 1's student" in result.stderr
    for term in ("embeddings_0_0", "hidden_2_1", "attention_4_2", "soft_cross_entropy"):
        assert re.search(rf"epoch 1 \(step \d+\): .*\b{term} \d", result.stderr), term
    info = json.loads((out / "export" / "export_info.json").read_text())
    assert info["model"] == "tinybert" and info["onnx_max_abs_error"] < 1e-4 and info["stages"] == [
        "intermediate", "prediction"]
    assert (out / "export" / "model.int8.onnx").exists()
    student = checkpoints.load_teacher(str(out / "export"))  # what generate_dataset.py --model and
    assert student.model.encoder.config.num_hidden_layers == 2  # run_classifier --init_checkpoint read
    assert not any("projection" in name for name in checkpoints.resolve_pretrained(str(out / "export")).weights)
    results = dict(line.split(" = ") for line in (out / "eval_results.txt").read_text().splitlines())
    assert int(results["eval_examples"]) == 8


def latest_step(folder) -> int:
    state = folder / "checkpoints" / "checkpoint"
    found = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', state.read_text(), re.M) if state.exists() else None
    return int(found.group(1)) if found else 0


def test_stage_switch_and_kill_and_resume_in_each_stage(workspace, tmp_path):
    # 8 rows in bucketed batches of at most 4 (3 steps an epoch), a checkpoint every 2 steps and at
    # each epoch's end: stage 1 has 6 steps, stage 2 has 12. Each stage's trainer counts its own
    # steps, so with stage 1 done a kill at step 8 can only happen inside stage 2.
    out = tmp_path / "out"
    args = ("--intermediate_epochs=2", "--prediction_epochs=4", "--do_export=false", "--log_every_steps=1")
    assert_killed(run(workspace, out, *args, check=False, env=killed_at_step(4)))
    assert latest_step(out / "intermediate") == 4  # killed inside stage 1, right after its ckpt-4
    assert not (out / "intermediate" / "student.weights.h5").exists() and not (out / "prediction").exists()
    second = run(workspace, out, *args, check=False, env=killed_at_step(8))
    assert_killed(second)
    assert re.search(r"Resumed from .*/intermediate/checkpoints/ckpt-4\b", second.stderr)
    assert (out / "intermediate" / "student.weights.h5").exists()  # stage 1 finished in the second run
    assert latest_step(out / "intermediate") == 6 and latest_step(out / "prediction") == 8
    third = run(workspace, out, *args)  # without the kill hook
    resumed = dict(re.findall(r"Resumed from .*/(intermediate|prediction)/checkpoints/ckpt-(\d+)", third.stderr))
    assert resumed == {"intermediate": "6", "prediction": "8"}  # stage 1 is finished: not redone
    steps = [int(s) for s in re.findall(r"step (\d+)/12\b", third.stderr)]
    assert steps == list(range(9, 13))  # stage 2 continues where it was killed, to its end

    single = tmp_path / "single"  # --stage=intermediate, then --stage=prediction on the same folder
    run(workspace, single, "--stage=intermediate", "--num_train_epochs=1", "--do_export=false")
    assert (single / "intermediate" / "student.weights.h5").exists() and not (single / "prediction").exists()
    recorded = json.loads((single / "run_manifest.json").read_text())
    del recorded["flags"]["intermediate_loss_weight"]  # a folder of a toolkit before that flag: resumed at 0
    (single / "run_manifest.json").write_text(json.dumps(recorded))
    result = run(workspace, single, "--stage=prediction", "--num_train_epochs=1", "--do_export=false")
    assert "Stage 2 starts from stage 1's student" in result.stderr


@pytest.fixture(scope="module")
def stage1_run(workspace, tmp_path_factory):
    """A run folder whose finished stage 1 matched hidden states (`uniform:hidden`)."""
    folder = tmp_path_factory.mktemp("stage1") / "run"
    run(workspace, folder, "--stage=intermediate", "--num_train_epochs=1", "--layer_map=uniform:hidden",
        "--do_export=false")
    return folder


def test_stage_2_starts_from_another_runs_stage_1(workspace, stage1_run, tmp_path):
    out = tmp_path / "sweep"
    args = ("--stage=prediction", f"--intermediate_dir={stage1_run}", "--num_train_epochs=1", "--do_export=false",
            "--layer_map=uniform:hidden", "--intermediate_loss_weight=1")
    result = run(workspace, out, *args)
    for what in ("student", "projections"):
        assert f"Stage 2 starts from stage 1's {what}: {stage1_run}/intermediate/{what}.weights.h5" in result.stderr
    assert (out / "eval_results.txt").exists() and not (out / "intermediate").exists()
    recorded = json.loads((out / "run_manifest.json").read_text())["data"]
    assert str(stage1_run / "intermediate" / "student.weights.h5") in [entry["path"] for entry in recorded]

    student = stage1_run / "intermediate" / "student.weights.h5"
    original = student.read_bytes()
    try:  # stage 1 trained again under the sweep: resuming the sweep is refused, naming the file
        student.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        changed = run(workspace, out, *args, check=False)
    finally:
        student.write_bytes(original)
    assert changed.returncode != 0 and "data student.weights.h5 changed" in error_lines(changed)[0]


@pytest.mark.parametrize("extra, message", [
    (("--stage=both",), "--intermediate_dir starts stage 2 from another run's stage 1: use it with --stage=prediction"),
    (("--stage=prediction", "--intermediate_dir={empty}"), "holds no finished stage 1: no student.weights.h5"),
    (("--stage=prediction", "--student_config={other_student}"), "student.weights.h5 is not a stage 1 of this student"),
    (("--stage=prediction", "--intermediate_loss_weight=1"), "--layer_map=uniform is not the layer map of the stage 1"),
    (("--stage=prediction", "--intermediate_dir={out}/intermediate", "--output_dir={out}"),
     "is this run's own stage 1: drop it (--stage=prediction continues from it)"),
])
def test_a_stage_1_that_does_not_fit_is_refused_in_one_line_before_any_work(workspace, stage1_run, tmp_path, extra,
                                                                              message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other.json").write_text(json.dumps(tiny_config(**{**TEACHER, "num_hidden_layers": 1}).to_dict()))
    extra = [arg.format(empty=tmp_path / "empty", other_student=tmp_path / "other.json", out=stage1_run)
             for arg in extra]
    student = next((arg for arg in extra if arg.startswith("--student_config")), None)
    if not any(arg.startswith("--intermediate_dir") for arg in extra):
        extra.append(f"--intermediate_dir={stage1_run}")
    out = tmp_path / "out"
    before = fingerprint(stage1_run)
    result = run(workspace, out, "--num_train_epochs=1", *[arg for arg in extra if arg != student], check=False,
                 student=student)
    errors = error_lines(result)
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not out.exists() and fingerprint(stage1_run) == before


def test_general_distillation_streams_a_corpus_resumes_and_feeds_task_distillation(workspace, tmp_path):
    rng = np.random.default_rng(5)
    corpus = tmp_path / "corpus.txt"
    documents = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(6)) for _ in range(5)]
    corpus.write_text("\n\n".join(documents) + "\n")
    out = tmp_path / "general"
    args = ("tinybert/general_distill.py", f"--teacher_model={workspace / 'teacher'}", f"--corpus={corpus}",
            f"--student_config={workspace / 'student.json'}", f"--output_dir={out}", "--train_batch_size=4",
            "--max_seq_length=16", "--shuffle_buffer=8", "--save_checkpoints_steps=2")
    run_script(*args, "--max_steps=4")
    more = run_script(*args, "--max_steps=6")  # a longer run resumes from the first one's last checkpoint
    assert re.search(r"Resumed from .*ckpt-4\b", more.stderr)
    assert [int(s) for s in re.findall(r"step (\d+)/6", more.stderr)][-1] == 6
    student = checkpoints.resolve_pretrained(str(out / "student"))
    assert student.config.num_hidden_layers == 2 and "output_weights" not in student.weights
    result = run(workspace, tmp_path / "task", "--stage=prediction", "--num_train_epochs=1", "--do_export=false",
                 "--log_every_steps=1", student=f"--student_model={out / 'student'}")
    assert re.search(r"step (\d+)/\1\b", result.stderr)
