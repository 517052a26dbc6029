"""Up-front checks: every error names its field (a script shows its flag); debris of killed runs is cleaned, nothing else."""
import json
import os
import subprocess
import sys

import pytest

from bertdistill.training import validation
from bertdistill.errors import FlagError


def test_require_positive_in_range():
    assert validation.require("output_dir", "out") == "out"
    for value in (None, ""):
        with pytest.raises(FlagError, match="^output_dir is required$"):
            validation.require("output_dir", value)
    assert validation.positive("train_batch_size", 32) == 32
    for value in (0, -1, None, float("nan"), True, "3"):
        with pytest.raises(FlagError, match=r"train_batch_size=.* must be a positive number"):
            validation.positive("train_batch_size", value)
    assert validation.in_range("warmup_proportion", 0.0, 0, 1) == 0.0
    for value in (1.5, -0.1, None, float("nan")):
        with pytest.raises(FlagError, match=r"warmup_proportion=.* must be between 0 and 1"):
            validation.in_range("warmup_proportion", value, 0, 1)
    with pytest.raises(FlagError) as error:
        validation.positive("learning_rate", -1)
    assert error.value.flag == "learning_rate"


def test_writable_dir(tmp_path):
    target = tmp_path / "a" / "b"
    assert validation.writable_dir("output_dir", str(target)) == str(target)
    assert target.is_dir() and os.listdir(target) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(FlagError, match=r"output_dir=.*file is a file, not a folder"):
        validation.writable_dir("output_dir", str(tmp_path / "file"))
    with pytest.raises(FlagError, match=r"output_dir=.*file/sub is not writable"):
        validation.writable_dir("output_dir", str(tmp_path / "file" / "sub"))
    with pytest.raises(FlagError, match="output_dir is required"):
        validation.writable_dir("output_dir", None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_writable_dir_without_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(FlagError, match="output_dir=.* is not writable"):
        validation.writable_dir("output_dir", str(locked))


@pytest.fixture
def run_folder(tmp_path):
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    (export / "export_info.json").write_text(json.dumps({"model": "bert_classifier"}))
    (export / "model.onnx").write_bytes(b"onnx")
    return tmp_path / "run"


def test_export_folder(run_folder, tmp_path):
    assert validation.export_folder("model_dir", str(run_folder / "export"), ["model.onnx"]) == {
        "model": "bert_classifier"}
    with pytest.raises(FlagError, match=r"model_dir=.*run is a run folder, not an export folder: "
                                        r"pass model_dir=.*run/export$"):
        validation.export_folder("model_dir", str(run_folder))
    with pytest.raises(FlagError, match=r"init_checkpoint=.* is not an export folder of this toolkit: "
                                        r"no export_info.json \(expected export_info.json, model.onnx"):
        validation.export_folder("init_checkpoint", str(tmp_path))
    with pytest.raises(FlagError, match=r"model_dir=.*nowhere does not exist; expected an export folder"):
        validation.export_folder("model_dir", str(tmp_path / "nowhere"))
    with pytest.raises(FlagError, match=r"model_dir=.* lacks model.weights.h5"):
        validation.export_folder("model_dir", str(run_folder / "export"), ["model.weights.h5"])
    (run_folder / "export" / "export_info.json").write_text("{")
    with pytest.raises(FlagError, match="model_dir=.*export_info.json: the export's information is not valid JSON"):
        validation.export_folder("model_dir", str(run_folder / "export"))


@pytest.fixture
def glue_dir(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (folder / "dev.tsv").write_text("\ufeffsentence\tlabel\r\nbad\t0\r\n")
    (folder / "test.tsv").write_text("index\tsentence\n0\tfine\n")
    return folder


def test_split_files_glue(glue_dir):
    paths = validation.split_files(str(glue_dir), ["train", "dev", "test"], "SST-2")
    assert paths == {s: str(glue_dir / f"{s}.tsv") for s in ("train", "dev", "test")}
    assert validation.split_files(None, ["train"], "sst-2") == {}  # tfds
    (glue_dir / "dev.tsv").write_text("")
    with pytest.raises(FlagError, match=r"dev\.tsv is empty; check data_dir"):
        validation.split_files(str(glue_dir), ["train", "dev"], "sst-2")
    (glue_dir / "dev.tsv").unlink()
    with pytest.raises(FlagError, match=r"data_dir=.*sst2 has no dev\.tsv \(expected the GLUE SST-2 layout"):
        validation.split_files(str(glue_dir), ["train", "dev"], "sst-2")
    (glue_dir / "test.tsv").write_text("sentence\tlabel\nx\t1\n")
    with pytest.raises(FlagError, match=r"test\.tsv:1: expected header \['index', 'sentence'\], got "
                                        r"\['sentence', 'label'\]; is data_dir a GLUE SST-2 folder"):
        validation.split_files(str(glue_dir), ["test"], "sst-2")
    with pytest.raises(FlagError, match=r"data_dir=.*missing is not a folder \(it does not exist\)"):
        validation.split_files(str(glue_dir / "missing"), ["train"], "sst-2")
    with pytest.raises(FlagError, match=r"task_name=mnli: no file layout known"):
        validation.split_files(str(glue_dir), ["train"], "mnli")


def test_split_files_own_csv(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nok,1\n")
    assert validation.split_files(str(tmp_path), ["train"], "csv") == {"train": str(tmp_path / "train.csv")}
    with pytest.raises(FlagError, match=r"has no dev\.csv$"):
        validation.split_files(str(tmp_path), ["dev"], "csv")
    with pytest.raises(FlagError, match="data_dir is required for task_name=csv"):
        validation.split_files(None, ["train"], "csv")


def test_clean_debris_removes_only_debris(tmp_path):
    out = tmp_path / "out"
    (out / "export").mkdir(parents=True)
    (out / "export" / "model.onnx").write_text("keep")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    debris = [out / f".export.{dead}.tmp", out / f".test_results.tsv.{dead}.tmp",
              out / f".augmented.tsv.{dead}.tmp", out / f".run_manifest.json.{dead}.tmp"]
    (debris[0] / "export" / "saved_model").mkdir(parents=True)  # a folder being built
    (debris[0] / ".previous" / "saved_model").mkdir(parents=True)  # the export it was replacing
    (debris[1] / "test_results.tsv").parent.mkdir()
    (debris[1] / "test_results.tsv").write_text("partial")
    for path in debris[2:]:
        path.write_text("partial")  # written by an earlier version, a file rather than a folder
    keep = [out / "eval_results.txt", out / "notes.tmp.txt", out / "checkpoints" / "ckpt.tmp",
            out / "export" / "x.tmp", out / f".export.{os.getppid()}.tmp" / "f", out / "folder.tmp" / "f",
            out / "results.tsv.tmp", out / f"export.{dead}.tmp" / "f", out / f".export.{dead}.tmp.txt"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    removed = validation.clean_debris(str(out))
    assert sorted(removed) == sorted(str(p) for p in debris)
    assert not any(p.exists() for p in debris)
    assert all(p.exists() for p in keep) and (out / "export" / "model.onnx").exists()
    assert validation.clean_debris(str(out)) == []
    assert validation.clean_debris(str(tmp_path / "absent")) == []


def test_clean_debris_beside_another_export_folder(tmp_path):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / ".lstm.999999.tmp" / "lstm").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    removed = validation.clean_debris(str(tmp_path / "out"), export_dir=str(tmp_path / "exports" / "lstm"))
    assert removed == [str(tmp_path / "exports" / ".lstm.999999.tmp")]


def test_check_outputs_one_rule_for_every_output(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    train = data / "train.tsv"
    train.write_text("sentence\tlabel\n")
    export = tmp_path / "teacher" / "export"
    export.mkdir(parents=True)
    (export / "export_info.json").write_text("{}")
    (tmp_path / "alias").symlink_to(data)
    inputs = [None, "", str(data), str(export)]

    def refused(outputs, match, **kwargs):
        with pytest.raises(FlagError, match=match):
            validation.check_outputs(outputs, inputs, **kwargs)

    refused({"output_dir": str(tmp_path / "alias")}, r"output_dir=.*alias is also an input")
    refused({"output_dir": str(tmp_path)}, r"the input .*data lies inside output_dir=")
    refused({"output": str(tmp_path / "alias" / "train.tsv")}, r"output=.* would replace a file inside the input")
    refused({"output": str(export / "new.tsv")}, r"output=.*new.tsv is inside the export folder")
    refused({"output_dir": str(export / "run")}, r"output_dir=.*run is inside the export folder")
    validation.check_outputs({"output": str(data / "augmented.tsv"), "output_dir": str(data / "run1"),
                              "unset": None}, inputs)  # new paths beside the inputs
    validation.check_outputs({"output_dir": str(tmp_path / "teacher")}, [str(export)],
                             may_hold_inputs=("output_dir",))  # evaluating a run folder: its export is read


def test_non_finite_float_flags_are_refused():
    from absl import flags

    from bertdistill.cli import entry

    fv = flags.FlagValues()
    flags.DEFINE_float("temperature", 1.0, "", flag_values=fv)
    flags.DEFINE_integer("seed", 1, "", flag_values=fv)
    for value in ("nan", "inf", "-inf"):
        fv(["prog", f"--temperature={value}"])
        with pytest.raises(FlagError, match=r"^--temperature=.* must be a finite number$"):
            entry.check_finite(fv)
    fv(["prog", "--temperature=2"])
    entry.check_finite(fv)


def test_max_seq_length_fits_the_models_position_table():
    from bertdistill.models.bert import BertConfig
    from bertdistill.models.mpnet import MPNetConfig

    bert = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                      max_position_embeddings=16)
    assert validation.max_seq_length_fits(16, bert, "the teacher") == 16
    # The library names the config field; a script's error line shows it as the flag.
    with pytest.raises(FlagError, match=r"^max_seq_length=17 exceeds the 16 tokens the teacher takes "
                                        r"\(max_position_embeddings=16\)$"):
        validation.max_seq_length_fits(17, bert, "the teacher")
    mpnet = MPNetConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                        max_position_embeddings=18)  # positions start after the pad id 1: 16 tokens
    assert validation.max_seq_length_fits(16, mpnet, "m") == 16
    with pytest.raises(FlagError, match="^max_seq_length=17 exceeds the 16 tokens m takes"):
        validation.max_seq_length_fits(17, mpnet, "m")
