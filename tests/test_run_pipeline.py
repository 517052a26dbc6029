"""run_pipeline.py end to end on a tiny fixture (a 2-layer hidden-16 teacher, 40 train rows):
every report file with its keys and valid PNGs, each accuracy of the report counted again from the
exports, completed stages skipped on a second run with nothing run again, a stage killed (kill -9)
at a known checkpoint resumed, a killed pipeline's stage dying with it, bad flags refused before any
work."""
import csv
import json
import os
import re
import select
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from bertdistill import errors
from bertdistill.distill import tinybert

from bertdistill.models import checkpoints
from bertdistill.pipeline import orchestration
from bertdistill.pipeline import report as report_module

from bertdistill.training import locks
from bertdistill.serving.predictor import Predictor
from tests.bert_fixtures import tiny_config, write_vocab
from tests.conftest import REPO
from tests.reliability import fingerprint
from tests.scripts import error_lines, killed_at_step, run_script

SCRIPT = "run_pipeline.py"
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]
TEACHER = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=32)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny pre-trained teacher folder, a 1-layer student config and SST-2-format data."""
    root = tmp_path_factory.mktemp("pipeline")
    vocab = write_vocab(root / "vocab.txt")
    keras.utils.set_random_seed(0)
    encoder = tinybert.distillation_classifier(tiny_config(**TEACHER), 2, "mean")
    checkpoints.save_hf_folder(encoder, str(root / "pretrained"), vocab, ["0", "1"], True)
    (root / "student.json").write_text(json.dumps(tiny_config(**{**TEACHER, "num_hidden_layers": 1}).to_dict()))
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for split, count in (("train", 40), ("dev", 16)):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 8)))}\t{i % 2}" for i in range(count)]
        (root / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def arguments(workspace, output_dir, *extra):
    short = "--max_seq_length=16"
    return (f"--data_dir={workspace / 'data'}", f"--init_checkpoint={workspace / 'pretrained'}",
            f"--student_config={workspace / 'student.json'}", f"--output_dir={output_dir}", "--preset=smoke",
            "--num_teachers=2", "--augment_factor=1", "--lstm_augment_factor=2", "--speed_rounds=1", "--latency_texts=4",
            "--robustness_examples=12",
            f"--stage_flag=teacher:{short}", "--stage_flag=teacher:--train_batch_size=8",
            f"--stage_flag=transfer:{short}", f"--stage_flag=transfer_bilstm:{short}", f"--stage_flag=bilstm_gold:{short}",
            f"--stage_flag=bilstm_distil:{short}", f"--stage_flag=tinybert:{short}",
            "--stage_flag=tinybert:--train_batch_size=8",
            *[f"--stage_flag={stage}:--{size}=8" for stage in ("bilstm_gold", "bilstm_distil")
              for size in ("embedding_dim", "hidden_size", "dense_size")], *extra)


@pytest.fixture(scope="module")
def finished(workspace):
    output_dir = workspace / "run"
    result = run_script(SCRIPT, *arguments(workspace, output_dir), timeout=900)
    return output_dir, result


def dev_set(workspace) -> tuple[list[str], list[str]]:
    rows = [line.split("\t") for line in (workspace / "data" / "dev.tsv").read_text().splitlines()[1:]]
    return [row[0] for row in rows], [row[1] for row in rows]


def counted_accuracy(export_dir, precision: str, texts, gold) -> float:
    """Percent of `texts` whose label, by the export's `precision` model, is the gold one."""
    predicted = Predictor(str(export_dir), quantized=precision == "int8").predict(texts)
    assert len(predicted) == len(gold)
    return 100 * sum(p.label == label for p, label in zip(predicted, gold)) / len(gold)


def test_smoke_pipeline_writes_the_whole_report(workspace, finished):
    output_dir, result = finished
    # The nominal ETA counts each teacher's training and labelling pass: smoke minutes 0.1 data
    # + 2 x 3.0 teachers + 2 x 0.8 transfer + 2 x 1.6 the BiLSTM's (x2 against x1: twice the rows)
    # + 0.6 + 1.0 BiLSTMs + 4.5 TinyBERT + 1.5 report.
    assert ("[pipeline] stage 1/9 data: start (train subsample of 2000); elapsed 00:00:00, "
            "ETA ~00:18:30 (nominal)") in result.stdout
    assert "[pipeline] stage 9/9 report: done" in result.stdout
    report = output_dir / "report"
    results = json.loads((report / "results.json").read_text())
    assert set(results["models"]) == {"teacher_1", "teacher_2", "bilstm_gold", "bilstm_distil", "tinybert"}
    assert results["models"]["bilstm_distil"]["description"] == "BiLSTM distilled on its own x2 transfer set"
    # the preset's student flags (none in smoke) and the --stage_flag values that made it
    assert results["models"]["tinybert"]["description"] == ("TinyBERT, stage 1 + 2 on the transfer set, "
                                                            "--max_seq_length=16 --train_batch_size=8")
    texts, gold = dev_set(workspace)
    assert results["dev_examples"] == len(texts) == 16
    for name, entry in results["models"].items():
        # Each accuracy counted here from the model's own export on the 16 dev rows: a multiple of 6.25.
        expected = {precision: counted_accuracy(output_dir / name / "export", precision, texts, gold)
                    for precision in ("float32", "int8")}
        float32 = entry["precisions"]["float32"]
        assert float32["dev_accuracy"] == pytest.approx(expected["float32"]), name
        assert entry["precisions"]["int8"]["dev_accuracy"] == pytest.approx(expected["int8"]), name
        assert float32["latency_ms"] > 0 and float32["batch64_examples_per_s"] > 0, name
        assert entry["train_seconds"] > 0, name
        gate = entry["int8_gate"]  # every training stage's export ran the INT8 gate on the dev rows
        assert gate["examples"] == 16 and gate["max_drop"] == 0.5 and gate["reason"], name
        assert (gate["float32_accuracy"], gate["int8_accuracy"]) == pytest.approx(
            (expected["float32"], expected["int8"])), name
    assert results["models"]["teacher_1"]["precisions"]["float32"]["speedup_latency"] == pytest.approx(1.0)
    teachers = results["teachers"]
    seeds = {name: counted_accuracy(output_dir / name / "export", "float32", texts, gold)
             for name in ("teacher_1", "teacher_2")}
    assert teachers["seeds"] == pytest.approx(seeds)
    assert teachers["summary"]["mean"] == pytest.approx((seeds["teacher_1"] + seeds["teacher_2"]) / 2)
    ensemble = [Predictor(str(output_dir / name / "export"), quantized=False) for name in seeds]
    mean_logits = (ensemble[0].logits_of(texts) + ensemble[1].logits_of(texts)) / 2
    right = [ensemble[0].labels[i] == label for i, label in zip(mean_logits.argmax(1), gold)]
    assert teachers["ensemble_dev_accuracy"] == pytest.approx(100 * sum(right) / len(right))
    assert results["robustness"]["examples"] == 12
    assert set(results["robustness"]["models"]) == set(results["models"])
    assert results["provenance"]["transfer_set_teachers"] == ["teacher_1", "teacher_2"]
    assert set(results["provenance"]["versions"]) >= {"tensorflow", "onnxruntime", "bertdistill"}
    assert results["provenance"]["versions"]["machine"].endswith(f" CPUs, {report_module.cpu_name()}")
    markdown = (report / "results.md").read_text()
    for name in results["models"]:
        assert f"| {name} |" in markdown
    stages = ["data", "teacher_1", "teacher_2", "transfer", "transfer_bilstm", "bilstm_gold", "bilstm_distil",
              "tinybert"]
    assert list(results["provenance"]["stages"]) == stages  # in the chain's order, each with its wall time
    assert "labelled by teacher_1 + teacher_2 (mean logits)" in markdown
    assert re.search(r"Wall time per stage \(min\): " + ", ".join(rf"{name} \d+\.\d" for name in stages)
                     + r"; total \d+\.\d before the report", markdown), markdown
    for figure in ("accuracy_vs_latency.png", "robustness.png"):
        content = (report / figure).read_bytes()
        assert content.startswith(PNG_MAGIC) and len(content) > 5000, figure
    # The transfer set's logits are the mean of both teachers' (label = argmax for new rows).
    header = (output_dir / "transfer" / "augmented.tsv").read_text().splitlines()[0].split("\t")
    assert header[:2] == ["sentence", "label"] and len(header) == 4
    # The BiLSTM learnt from its own transfer set (up to 2 new sentences per train row, the
    # shared one up to 1), the TinyBERT student from the shared one.
    rows = {name: len(read_tsv(output_dir / name / "augmented.tsv")) for name in ("transfer", "transfer_bilstm")}
    assert 40 < rows["transfer"] <= 80 and rows["transfer"] < rows["transfer_bilstm"] <= 120, rows
    augmented = {stage: [flag for flag in json.loads((output_dir / "pipeline" / f"{stage}.json").read_text())["command"]
                         if flag.startswith("--augmented_file=")] for stage in ("bilstm_distil", "tinybert")}
    assert augmented == {"bilstm_distil": [f"--augmented_file={output_dir / 'transfer_bilstm' / 'augmented.tsv'}"],
                         "tinybert": [f"--augmented_file={output_dir / 'transfer' / 'augmented.tsv'}"]}
    assert read_tsv(output_dir / "transfer_bilstm" / "augmented.tsv")[0].keys() == \
        read_tsv(output_dir / "transfer" / "augmented.tsv")[0].keys()


def read_tsv(path) -> list[dict[str, str]]:
    """A transfer set's rows, read as users read it (`csv`, tab-separated, header)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor

processor\t: 1
model name\t: another
"""


def test_the_report_names_the_cpu_model_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    assert report_module.cpu_name(str(tmp_path / "cpuinfo")) == "Intel(R) Xeon(R) Processor (family 6, model 207)"
    (tmp_path / "bare").write_text("processor\t: 0\n")
    assert report_module.cpu_name(str(tmp_path / "bare")) == "unknown CPU (family ?, model ?)"


def test_second_run_skips_completed_stages(workspace, finished):
    output_dir, _ = finished
    before = fingerprint(output_dir)
    result = run_script(SCRIPT, *arguments(workspace, output_dir))
    lines = [line for line in result.stdout.splitlines() if line.startswith("[pipeline] stage ")]
    assert len(lines) == 9 and all(": complete, skipped (" in line for line in lines), lines
    # Nothing ran: no stage's script started (each appends to logs/<stage>.log), the report was not
    # made again, no record, checkpoint, export or data file changed (pipeline_flags.json is written
    # again, with the same contents). The lock file comes and goes.
    after = fingerprint(output_dir)
    assert {path: digest for path, digest in after.items() if path != locks.LOCK_NAME} == {
        path: digest for path, digest in before.items() if path != locks.LOCK_NAME}


def test_changed_settings_are_refused_before_any_work(workspace, finished):
    output_dir, _ = finished
    result = run_script(SCRIPT, *arguments(workspace, output_dir, "--teacher_epochs=3"), check=False)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "teacher_1 was completed with other settings" in lines[0], result.stderr[-2000:]


def test_a_stage_whose_own_transfer_set_is_missing_is_refused_before_any_work(workspace, finished, tmp_path):
    """bilstm_distil reads transfer_bilstm: --stages=bilstm_distil without it complete names it;
    with --overwrite_output_dir nothing is complete, and the refusal comes before clearing."""
    import shutil

    output_dir = tmp_path / "run"
    shutil.copytree(finished[0], output_dir, ignore=shutil.ignore_patterns(locks.LOCK_NAME))
    (output_dir / "pipeline" / "transfer_bilstm.json").unlink()
    result = run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=bilstm_distil"), check=False)
    assert result.returncode == 2 and error_lines(result) == [
        f"error: --stages: bilstm_distil reads the output of transfer_bilstm, which is not complete in {output_dir}; "
        "add transfer_bilstm to --stages"], result.stderr[-2000:]
    records = sorted(path.name for path in (output_dir / "pipeline").iterdir())
    starting_over = run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=bilstm_distil",
                                                  "--overwrite_output_dir"), check=False)
    assert starting_over.returncode == 2 and error_lines(starting_over) == [
        f"error: --stages: bilstm_distil reads the output of data, which --overwrite_output_dir clears from "
        f"{output_dir}; add data to --stages"], starting_over.stderr[-2000:]
    assert sorted(path.name for path in (output_dir / "pipeline").iterdir()) == records  # nothing cleared


def test_a_stage_is_chosen_and_given_flags_by_its_own_name(workspace, finished):
    """--stages=transfer and --stages=transfer_bilstm each run that transfer set alone; a
    --stage_flag for teacher_2 changes that teacher's command and not teacher_1's, so the
    completed run refuses it naming teacher_2."""
    output_dir, _ = finished
    for name in ("transfer", "transfer_bilstm"):
        result = run_script(SCRIPT, *arguments(workspace, output_dir, f"--stages={name}"))
        lines = [line for line in result.stdout.splitlines() if line.startswith("[pipeline] stage ")]
        assert len(lines) == 1 and lines[0].startswith(f"[pipeline] stage 1/1 {name}: complete, skipped ("), lines
    changed = run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=teacher",
                                            "--stage_flag=teacher_2:--learning_rate=1e-4"), check=False)
    assert changed.returncode == 2 and error_lines(changed) == [
        f"error: {output_dir}: stage teacher_2 was completed with other settings (--learning_rate=1e-4 added); use "
        "another --output_dir, or --overwrite_output_dir to start over"], changed.stderr[-2000:]


@pytest.mark.parametrize("now, difference", [
    (["train.py", "--lr=2", "--seed=1"], "--lr=1 then, --lr=2 now"),
    (["train.py", "--seed=1"], "--lr=1 dropped"),
    (["train.py", "--lr=1", "--epochs=3", "--seed=1"], "--epochs=3 added"),
    (["train.py", "--lr=2", "--seed=1", "--epochs=3"], "--lr=1 then, --lr=2 now; --epochs=3 added"),
])
def test_a_completed_stage_with_another_command_is_refused_naming_the_difference(tmp_path, now, difference):
    record = orchestration.record_path(str(tmp_path), "teacher_1")
    os.makedirs(os.path.dirname(record))
    with open(record, "w", encoding="utf-8") as f:
        json.dump({"command": ["train.py", "--lr=1", "--seed=1"], "seconds": 1.0, "finished": "2026-01-01T00:00:00"}, f)
    with pytest.raises(errors.UserError, match=f"stage teacher_1 was completed with other settings \\({difference}\\)"):
        orchestration.check_records(str(tmp_path), [orchestration.Stage("teacher_1", command=now)])


def test_a_moved_checkout_skips_the_stages_it_completed(workspace, finished, tmp_path):
    """The toolkit copied elsewhere (a moved or second checkout) runs the same command on a
    finished folder: its records name each script relative to the toolkit, so nothing runs."""
    import shutil

    output_dir, _ = finished
    moved = tmp_path / "elsewhere"
    shutil.copytree(REPO, moved, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "__pycache__", "tests"))
    result = run_script(SCRIPT, *arguments(workspace, output_dir), toolkit=moved)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[pipeline] stage ")]
    assert len(lines) == 9 and all(": complete, skipped (" in line for line in lines), lines
    record = json.loads((output_dir / "pipeline" / "teacher_1.json").read_text())
    assert record["command"][0] == "bert_finetune/run_classifier.py"


def test_a_moved_output_folder_skips_the_stages_it_completed(workspace, finished, tmp_path):
    """A finished run's folder copied elsewhere (a moved or renamed --output_dir) and the same
    command naming the new place: each stage's record reads its paths there, so nothing runs; a
    stage whose settings changed is still refused, in the new place's paths."""
    import shutil

    output_dir = shutil.copytree(finished[0], tmp_path / "copied")
    result = run_script(SCRIPT, *arguments(workspace, output_dir))
    lines = [line for line in result.stdout.splitlines() if line.startswith("[pipeline] stage ")]
    assert len(lines) == 9 and all(": complete, skipped (" in line for line in lines), lines
    changed = run_script(SCRIPT, *arguments(workspace, output_dir, "--stage_flag=bilstm_gold:--learning_rate=0.01"),
                         check=False)
    assert error_lines(changed)[0].startswith(f"error: {output_dir}: stage bilstm_gold was completed with other "
                                              "settings (--learning_rate=0.01 added);"), changed.stderr


def test_a_refused_run_leaves_the_folder_as_it_was(workspace, finished, tmp_path):
    """Settings a completed stage was not made with (here the report's) are refused before the
    pipeline writes anything: its settings file and the derived student config stay the run's. The
    report asked for by name is made again with them."""
    import shutil

    output_dir = shutil.copytree(finished[0], tmp_path / "copied")
    before = fingerprint(output_dir)
    changed = run_script(SCRIPT, *arguments(workspace, output_dir, "--robustness_examples=13"), check=False)
    assert changed.returncode == 2 and error_lines(changed)[0].startswith(
        f"error: {output_dir}: stage report was completed with other settings (12 then, 13 now);"), changed.stderr
    assert fingerprint(output_dir) == before
    remade = run_script(SCRIPT, *arguments(workspace, output_dir, "--robustness_examples=13", "--stages=report"))
    assert "stage 1/1 report: start" in remade.stdout
    assert json.loads((output_dir / "pipeline" / "report.json").read_text())["command"][0] == "13"


@pytest.mark.parametrize("recorded, accepted", [
    ("/old/checkout/bert_finetune/run_classifier.py", True),
    ("bert_finetune/run_classifier.py", True),
    ("/old/checkout/xbert_finetune/run_classifier.py", False),
    ("/old/checkout/distil_lstm/main.py", False),
])
def test_a_record_naming_its_script_by_an_absolute_path_matches_the_same_script(tmp_path, recorded, accepted):
    """Records made before scripts were recorded relative to the toolkit name them by the
    absolute path of the checkout they ran from."""
    record = orchestration.record_path(str(tmp_path), "teacher_1")
    os.makedirs(os.path.dirname(record))
    with open(record, "w", encoding="utf-8") as f:
        json.dump({"command": [recorded, "--lr=1"], "seconds": 1.0, "finished": "2026-01-01T00:00:00"}, f)
    stage = orchestration.Stage("teacher_1", command=["/new/place/bert_finetune/run_classifier.py", "--lr=1"],
                                key=["bert_finetune/run_classifier.py", "--lr=1"])
    if accepted:
        orchestration.check_records(str(tmp_path), [stage])
    else:
        with pytest.raises(errors.UserError, match="stage teacher_1 was completed with other settings"):
            orchestration.check_records(str(tmp_path), [stage])


def test_a_stage_newer_than_the_report_makes_it_again(workspace, finished):
    """A student stage that finished after the report (run again, or a stage added to the chain):
    the same command makes the report again and skips the rest; after that, it is complete."""
    import datetime

    output_dir, _ = finished
    report_finished = json.loads((output_dir / "pipeline" / "report.json").read_text())["finished"]
    record_file = output_dir / "pipeline" / "bilstm_distil.json"
    record = record_file.read_text()
    later = datetime.datetime.fromisoformat(report_finished) + datetime.timedelta(seconds=1)
    record_file.write_text(json.dumps({**json.loads(record), "finished": later.isoformat()}))
    try:
        before = (output_dir / "report" / "results.json").stat().st_mtime_ns
        result = run_script(SCRIPT, *arguments(workspace, output_dir))
        lines = [line for line in result.stdout.splitlines() if line.startswith("[pipeline] stage ")]
        assert all(": complete, skipped (" in line for line in lines[:8]), lines
        assert lines[8] == "[pipeline] stage 9/9 report: made again (an earlier stage is newer)", lines
        assert lines[9].startswith("[pipeline] stage 9/9 report: start;") and len(lines) == 11, lines
        assert (output_dir / "report" / "results.json").stat().st_mtime_ns > before
        again = run_script(SCRIPT, *arguments(workspace, output_dir))
        assert "[pipeline] stage 9/9 report: complete, skipped" in again.stdout
    finally:
        record_file.write_text(record)


def test_report_alone_is_made_again(workspace, finished):
    output_dir, _ = finished
    before = (output_dir / "report" / "results.json").stat().st_mtime_ns
    result = run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=report"))
    assert "stage 1/1 report: start" in result.stdout
    assert (output_dir / "report" / "results.json").stat().st_mtime_ns > before


@pytest.mark.parametrize("moved", [False, True], ids=["in_place", "folder_moved"])
def test_kill_inside_a_stage_resumes_it(workspace, tmp_path, moved):
    # The BiLSTM stage: 40 rows in bucketed batches of at most 50, 3 steps an epoch, a checkpoint at
    # each epoch's end; early stopping (patience 3) cannot end 4 epochs early. Its script (the
    # pipeline passes its environment on) kills itself right after ckpt-6, the first at a step >= 4.
    # Moved: the killed run's folder is renamed and the command names the new place; the stage
    # resumes there (its manifest names the data stage's files under the old place).
    output_dir = tmp_path / "run"
    args = arguments(workspace, output_dir, "--stages=data,bilstm_gold", "--lstm_epochs=4")
    killed = run_script(SCRIPT, *args, check=False, env=killed_at_step(4))
    lines = error_lines(killed)
    assert killed.returncode == 2 and len(lines) == 1, killed.stderr[-3000:]
    assert lines[0].startswith(f"error: stage bilstm_gold failed (exit status -9); its log: "
                               f"{output_dir / 'logs' / 'bilstm_gold.log'};"), lines[0]
    state = (output_dir / "bilstm_gold" / "checkpoints" / "checkpoint").read_text()
    assert state.startswith('model_checkpoint_path: "ckpt-6"\n'), state
    assert not (output_dir / "pipeline" / "bilstm_gold.json").exists()
    assert (output_dir / "pipeline" / "data.json").exists()
    if moved:
        output_dir = output_dir.rename(tmp_path / "moved")
        args = arguments(workspace, output_dir, "--stages=data,bilstm_gold", "--lstm_epochs=4")
    result = run_script(SCRIPT, *args)  # without the kill hook
    assert "stage 1/2 data: complete, skipped" in result.stdout
    # the ETA counts only the stages left to run: bilstm_gold's nominal 0.6 min, not data's 0.1
    assert re.search(r"stage 2/2 bilstm_gold: start; elapsed 00:00:0\d, ETA ~00:00:36 \(nominal\)", result.stdout)
    assert re.search(r"Resumed from .*ckpt-6\b", (output_dir / "logs" / "bilstm_gold.log").read_text())
    assert (output_dir / "pipeline" / "bilstm_gold.json").exists()
    assert (output_dir / "bilstm_gold" / "export" / "model.onnx").exists()


# A stand-in pipeline running one stand-in stage through the pipeline's own `run_command`: the
# stage prints its pid (copied to the pipeline's stdout, as a stage's output is) and sleeps.
PIPELINE = ("import sys; from bertdistill.pipeline import orchestration; "
            "sys.exit(orchestration.run_command(['-c', sys.argv[1]], sys.argv[2]))")
STAGE = "import os, time; print(os.getpid(), flush=True); time.sleep(300)"


def test_a_killed_pipeline_takes_its_running_stage_with_it(tmp_path):
    """kill -9 of the pipeline while a stage runs: the stage's process dies too (PR_SET_PDEATHSIG),
    so the next run neither finds the stage's folder locked nor an orphan writing into it."""
    pipeline = subprocess.Popen([sys.executable, "-c", PIPELINE, STAGE, str(tmp_path / "stage.log")],
                                cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        stage_pid = int(pipeline.stdout.readline())  # the stage runs (a blocking read, no polling)
        stage = os.pidfd_open(stage_pid)
    finally:
        pipeline.kill()
        pipeline.wait()
    try:
        ended, _, _ = select.select([stage], [], [], 60)  # a pidfd turns readable when its process ends
        if not ended:
            signal.pidfd_send_signal(stage, signal.SIGKILL)
        assert ended, "the stage outlived the killed pipeline"
    finally:
        os.close(stage)


@pytest.mark.parametrize("flag, message", [
    ("--stages=teacher,nonsense", "--stages"),
    ("--stages=", "--stages is empty; choose from data, teacher, transfer, transfer_bilstm, bilstm_gold, "),
    ("--robustness_rates=0.1,2", "--robustness_rates"),
    ("--stage_flag=teacher_x:--seed=1", "--stage_flag"),
    ("--stage_flag=teacher_3:--seed=1", "--stage_flag=teacher_3:...: this run has no stage teacher_3; choose from"),
    ("--stages=tinybert_3l", "--stages=tinybert_3l: unknown ['tinybert_3l']; choose from data, teacher, "),
    ("--stages=tinybert", "--stages: tinybert reads the output of data, which is not complete in "),
    ("--stage_flag=tinybert:--temperature=0", "stage tinybert: need --temperature > 0"),
    ("--stage_flag=tinybert:--layer_map=uniform:bogus", "stage tinybert: --layer_map: layer map rule 'uniform:bogus': after"),
    ("--stage_flag=bilstm_gold:--dropout=nan", "stage bilstm_gold: --dropout=nan must be a finite number"),
    ("--stage_flag=teacher:--seed=-1", "stage teacher_1: flag --seed=-1"),
    ("--stage_flag=transfer:--p_mask=2", "stage transfer: --p_mask=2.0"),
    ("--lstm_augment_factor=-1", "--lstm_augment_factor=-1 must be 0"),
    ("--lstm_augment_factor=0", "--stage_flag=transfer_bilstm:...: this run has no stage transfer_bilstm"),
])
def test_bad_flags_fail_in_one_line_before_any_work(workspace, tmp_path, flag, message):
    output_dir = tmp_path / "run"
    result = run_script(SCRIPT, *arguments(workspace, output_dir, flag), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not output_dir.exists()


def test_large_preset_chains_the_mpnet_teacher_into_minilm_students(tmp_path):
    """--preset=large: the teacher stage fine-tunes `mpnet` in bfloat16 at 2e-5 (its INT8 keeping the
    FFN input projections in float32); two TinyBERT stages with the MiniLM's own vocabulary: the
    6-layer one from the pretrained MiniLM (stage 1 on hidden states, then stage 2), the 3-layer one
    (stage 2 only) from layers 2, 4, 6 of the 6-layer student's export, in this run's folder."""
    code = ("import json, sys; from absl import flags; import run_pipeline as rp; "
            "flags.FLAGS(sys.argv); print(json.dumps({s.name: s.command for s in rp.build_stages(sys.argv[-1], rp.stage_flags())}))")

    def commands_of(*args):
        result = subprocess.run([sys.executable, "-c", code, "run_pipeline.py", *args, f"--output_dir={tmp_path}",
                                 str(tmp_path)], cwd=str(REPO), capture_output=True, text=True, timeout=120, check=True)
        return json.loads(result.stdout.splitlines()[-1])

    commands = commands_of("--preset=large")
    assert [name for name in commands if name.startswith(("teacher", "tinybert"))] == \
        ["teacher_1", "tinybert_6l", "tinybert_3l"]
    teacher = commands["teacher_1"]
    assert {"--init_checkpoint=mpnet", "--mixed_precision=mixed_bfloat16", "--learning_rate=2e-05",
            "--int8_keep_float=intermediate"} <= set(teacher)
    assert "--student_model=minilm" in commands["tinybert_6l"] and not any(
        flag.startswith(("--student_layers", "--student_config")) for flag in commands["tinybert_6l"])
    assert {f"--student_model={tmp_path / 'tinybert_6l' / 'export'}", "--student_layers=2,4,6",
            "--prediction_learning_rate=1e-4"} <= set(commands["tinybert_3l"])
    # the 6L: stage 1 on hidden states alone, 3 epochs over the whole transfer set, then stage 2;
    # the 3L: stage 2 only, so no stage-1 flags
    assert {"--layer_map=uniform:hidden", "--intermediate_epochs=3.0"} <= set(commands["tinybert_6l"]) and not any(
        flag.startswith(("--stage=", "--intermediate_max_examples")) for flag in commands["tinybert_6l"])
    assert "--stage=prediction" in commands["tinybert_3l"] and not any(
        flag.startswith("--intermediate_") for flag in commands["tinybert_3l"])
    assert not any(flag.startswith("--stage=") for flag in commands_of("--preset=full")["tinybert"])
    # --stage_flag can turn stage 1 off (the last --stage= wins): the pipeline then drops its stage-1 settings
    stage_2 = commands_of("--preset=large", "--stage_flag=tinybert_6l:--stage=prediction")["tinybert_6l"]
    assert stage_2[-1] == "--stage=prediction" and not any(flag.startswith("--intermediate_") for flag in stage_2)
    assert f"--teacher_model={tmp_path / 'teacher_1' / 'export'}" in commands["tinybert_3l"]
    # the BiLSTM's own x8 transfer set, labelled in bfloat16, and the teacher's input embeddings
    own_set = tmp_path / "transfer_bilstm" / "augmented.tsv"
    assert {f"--output={own_set}", "--augment_factor=8", "--mixed_precision=mixed_bfloat16",
            f"--model={tmp_path / 'teacher_1' / 'export'}"} <= set(commands["transfer_bilstm"])
    assert {f"--augmented_file={own_set}", f"--word_vectors={tmp_path / 'teacher_1' / 'export'}",
            "--embedding_dim=768"} <= set(commands["bilstm_distil"])
    assert f"--augmented_file={tmp_path / 'transfer' / 'augmented.tsv'}" in commands["tinybert_6l"]
    assert "--augment_factor=2" in commands["transfer"]
    full = commands_of("--preset=full")
    assert "transfer_bilstm" not in full and not any(flag.startswith("--word_vectors")
                                                     for flag in full["bilstm_distil"])
    # the other presets keep the exporter's default (their teacher stages' commands are unchanged)
    assert not any(flag.startswith("--int8_keep_float") for flag in commands_of("--preset=full")["teacher_1"])
    assert "--int8_keep_float=none" in commands_of("--preset=full", "--teacher_int8_keep_float=none")["teacher_1"]


def test_a_pipeline_folder_in_use_is_refused_in_one_line_and_kept(workspace, tmp_path):
    output_dir = tmp_path / "run"
    (output_dir / "pipeline").mkdir(parents=True)
    (output_dir / "pipeline" / "data.json").write_text("{}")
    locks.lock_folder(str(output_dir))  # this process stands for the live pipeline
    try:
        result = run_script(SCRIPT, *arguments(workspace, output_dir, "--overwrite_output_dir"), check=False)
    finally:
        locks.release_folder(str(output_dir))
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"is in use by another run (pid {os.getpid()}:" in lines[0]
    assert os.listdir(output_dir) == ["pipeline"] and (output_dir / "pipeline" / "data.json").exists()


def test_a_student_that_cannot_start_from_the_teachers_layers_is_refused_before_any_stage(workspace, tmp_path):
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(tiny_config(**{**TEACHER, "hidden_size": 32, "num_hidden_layers": 1}).to_dict()))
    result = run_script(SCRIPT, *arguments(workspace, tmp_path / "run", f"--student_config={wide}"), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and "--student_config=" in lines[0] and "hidden_size 16 (teacher) vs 32" in lines[0]
    assert not (tmp_path / "run" / "pipeline").exists()


def test_teacher_embeddings_of_another_width_are_refused_before_any_stage(workspace, tmp_path):
    """The BiLSTM started from the first teacher's input embeddings (16 wide here) with another
    --embedding_dim (8): one line before the teacher trains, not a failure hours later."""
    output_dir = tmp_path / "run"
    flag = f"--stage_flag=bilstm_distil:--word_vectors={output_dir / 'teacher_1' / 'export'}"
    result = run_script(SCRIPT, *arguments(workspace, output_dir, flag), check=False)
    assert result.returncode == 2 and error_lines(result) == [
        f"error: stage bilstm_distil: --word_vectors={output_dir / 'teacher_1' / 'export'} gives the teacher's "
        "16-d input embeddings, not --embedding_dim=8; pass --stage_flag=bilstm_distil:--embedding_dim=16"], \
        result.stderr[-2000:]
    assert not (output_dir / "pipeline").exists()
    right = "--stage_flag=bilstm_distil:--embedding_dim=16"
    accepted = run_script(SCRIPT, *arguments(workspace, output_dir, flag, right, "--stages=data"))
    assert "[pipeline] stage 1/1 data: done" in accepted.stdout


def test_a_teacher_int8_setting_that_names_no_layer_is_refused_before_any_stage(workspace, tmp_path):
    result = run_script(SCRIPT, *arguments(workspace, tmp_path / "run", "--teacher_int8_keep_float=intermediat"),
                        check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and "stage teacher_1: --int8_keep_float=intermediat: 'intermediat' is none of" in lines[0]
    assert not (tmp_path / "run" / "pipeline").exists()


def test_report_shows_another_runs_models_beside_this_runs(workspace, finished, tmp_path):
    """--compare_with: another finished run's exports are rows `<its folder>:<stage>` of the report,
    their accuracies counted from their exports, timed in the same rounds (speed-up still over this
    run's teacher_1)."""
    import shutil

    output_dir, _ = finished
    other = tmp_path / "minilm"
    shutil.copytree(output_dir, other, ignore=shutil.ignore_patterns(locks.LOCK_NAME))
    (other / "bilstm_gold" / "export" / "export_info.json").unlink()  # a stage without an export is left out
    run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=report", f"--compare_with={other}"))
    results = json.loads((output_dir / "report" / "results.json").read_text())
    references = [name for name in results["models"] if name.startswith("minilm:")]
    assert references == ["minilm:teacher_1", "minilm:teacher_2", "minilm:bilstm_distil", "minilm:tinybert"]
    texts, gold = dev_set(workspace)
    for name in references:
        entry = results["models"][name]
        expected = counted_accuracy(other / name.split(":")[1] / "export", "float32", texts, gold)
        assert entry["role"] == "reference" and entry["precisions"]["float32"]["dev_accuracy"] == pytest.approx(
            expected), name
        assert entry["precisions"]["float32"]["latency_ms"] > 0 and entry["precisions"]["int8"]["latency_ms"] > 0
    assert results["speedup_reference"] == "teacher_1/float32"
    assert set(results["teachers"]["seeds"]) == {"teacher_1", "teacher_2"}  # the other run's are not this run's seeds
    markdown = (output_dir / "report" / "results.md").read_text()
    assert "| minilm:tinybert |" in markdown and f"are the models of another run ({other})" in markdown
    refused = run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=report", f"--compare_with={tmp_path}"),
                         check=False)
    assert refused.returncode == 2 and error_lines(refused) == [
        f"error: --compare_with={tmp_path}: no exported model (no <stage>/export/export_info.json); give the "
        "--output_dir of a finished run"]
    run_script(SCRIPT, *arguments(workspace, output_dir, "--stages=report"))  # the report without them again
