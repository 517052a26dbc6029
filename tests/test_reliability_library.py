"""The reliability pieces in-process: runner.prepare_run (inputs, outputs, manifest, debris), skip
mode of the transfer-set readers, config and export-folder errors as UserErrors naming the key,
model paths, output writability. The entry points' one-line errors: tests/test_reliability_*.py."""
import json
import os

import pytest
from absl import flags

from bertdistill import errors

from bertdistill.cli import script_flags

from bertdistill.data import data

from bertdistill.distill import transfer_set

from bertdistill.models import checkpoints

from bertdistill.tasks import runner

from bertdistill.training import manifest, validation
from bertdistill.models.bert import BertConfig
from bertdistill.data.data import DataError
from bertdistill.cli.flags import define_common_flags, define_data_flags
from distil_lstm.predict import read_export_folder
from tests.reliability import fingerprint


run_of = script_flags.run_config  # the run config a script makes of its flags


@pytest.fixture
def fv(tmp_path):
    values = flags.FlagValues()
    define_common_flags(values)
    values(["test"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (data / "dev.tsv").write_text("sentence\tlabel\nbad\t0\n")
    values.data_dir, values.output_dir = str(data), str(tmp_path / "out")
    return values


def prepare(fv, **kwargs):
    data = [os.path.join(fv.data_dir, "train.tsv"), os.path.join(fv.data_dir, "dev.tsv")]
    return runner.prepare_run(run_of(fv), data_files=data, model_config={"hidden_size": 8},
                              inputs={"data_dir": fv.data_dir}, **kwargs)


def test_prepare_run_creates_resumes_and_refuses_other_data(fv, tmp_path):
    assert prepare(fv) == "created"
    assert os.path.exists(os.path.join(fv.output_dir, manifest.MANIFEST_NAME))
    (tmp_path / "out" / "vocab.txt").write_text("[PAD]\n[UNK]\n[MASK]\n")
    fv.num_train_epochs, fv.do_eval = 10.0, True  # training longer and action flags: the same run
    assert prepare(fv) == "resumed"
    (tmp_path / "data" / "train.tsv").write_text("sentence\tlabel\nother\t0\n")
    before = fingerprint(fv.output_dir)
    with pytest.raises(errors.UserError, match=r"holds another run: data train\.tsv changed.*overwrite_output_dir"):
        prepare(fv)
    fv.learning_rate = 1.0
    with pytest.raises(errors.UserError, match=r"learning_rate: 5e-05 -> 1\.0"):
        prepare(fv)
    assert fingerprint(fv.output_dir) == before
    fv.overwrite_output_dir = True
    assert prepare(fv) == "overwritten"
    assert sorted(os.listdir(fv.output_dir)) == [manifest.MANIFEST_NAME]  # the old vocabulary is gone


def test_prepare_run_refuses_an_output_that_is_or_holds_an_input(fv, tmp_path):
    fv.output_dir = fv.data_dir
    with pytest.raises(errors.UserError, match="output_dir=.* is also an input"):
        prepare(fv)
    fv.output_dir = str(tmp_path)
    with pytest.raises(errors.UserError, match="lies inside output_dir"):
        prepare(fv)
    with pytest.raises(errors.UserError, match="output=.* is also an input"):
        runner.prepare_run(run_of(fv), outputs={"output": str(tmp_path / "data" / "train.tsv")},
                           inputs={"input": str(tmp_path / "data" / "train.tsv")})
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(errors.FlagError, match="output=.*blocker.* is a file, so the file cannot be created"):
        runner.prepare_run(run_of(fv), outputs={"output": str(tmp_path / "blocker" / "x.tsv")}, inputs={})
    assert not (tmp_path / "out").exists()


def test_prepare_run_cleans_debris_and_evaluation_runs_check_the_model(fv, tmp_path):
    prepare(fv)
    out = tmp_path / "out"
    (out / ".export.999999.tmp").mkdir()
    (out / ".eval_results.txt.999999.tmp").mkdir()
    (out / ".eval_results.txt.999999.tmp" / "eval_results.txt").write_text("half")
    (out / "best").mkdir()
    assert prepare(fv) == "resumed"
    assert not (out / ".export.999999.tmp").exists() and not (out / ".eval_results.txt.999999.tmp").exists()
    fv.learning_rate = 1.0  # evaluating a trained folder: training flags do not matter, the model does
    assert runner.prepare_run(run_of(fv), model_config={"hidden_size": 8}, inputs={}, train=False) == "evaluating"
    with pytest.raises(errors.UserError, match="holds another model: model_config.hidden_size: 8 -> 16"):
        runner.prepare_run(run_of(fv), model_config={"hidden_size": 16}, inputs={}, train=False)
    (out / manifest.MANIFEST_NAME).unlink()
    with pytest.raises(errors.UserError, match=r"holds a trained model \(best\) but no run_manifest"):
        runner.prepare_run(run_of(fv), model_config={"hidden_size": 8}, inputs={}, train=False)
    output = tmp_path / "aug.tsv"
    (tmp_path / ".aug.tsv.999999.tmp").mkdir()
    (tmp_path / ".aug.tsv.999999.tmp" / "aug.tsv").write_text("half")
    (tmp_path / ".other.tsv.999999.tmp").write_text("not ours")
    assert runner.prepare_run(run_of(fv), outputs={"output": str(output)}, inputs={}) == "files"
    assert not (tmp_path / ".aug.tsv.999999.tmp").exists() and (tmp_path / ".other.tsv.999999.tmp").exists()


def test_transfer_set_readers_skip_and_count_bad_rows(tmp_path, caplog):
    path = tmp_path / "aug.tsv"
    path.write_text("sentence\tlabel\tlogit_0\tlogit_1\ngood\t1\t0.1\t0.9\nbad row\t7\t0\t0\n"
                    "nan row\t0\tnan\t1\nfine\t0\t2\t-1\nshort\t1\n")
    with pytest.raises(DataError, match=r"aug\.tsv:3: unknown label '7'"):
        transfer_set.read_transfer_set(str(path), ["0", "1"])
    skipped = {}
    examples, logits = transfer_set.read_transfer_set(str(path), ["0", "1"], on_error="skip", skipped=skipped)
    assert [e.text_a for e in examples] == ["good", "fine"] and logits.shape == (2, 2)
    assert skipped == {str(path): 3}
    assert "Skipped 3 bad rows" in caplog.text and "aug.tsv:3: unknown label" in caplog.text
    plain = tmp_path / "plain.tsv"
    plain.write_text("sentence\tlabel\nok\t1\n\t0\n")
    examples, logits = transfer_set.read_labelled_sentences(str(plain), ["0", "1"], on_error="skip")
    assert [e.text_a for e in examples] == ["ok"] and logits is None
    originals = transfer_set.read_originals(str(plain), data.Sst2Processor(), ["0", "1"], on_error="skip", skipped=skipped)
    assert [e.text_a for e in originals] == ["ok"] and skipped[str(plain)] == 1
    all_bad = tmp_path / "bad.tsv"
    all_bad.write_text("sentence\tlabel\nx\t9\ny\t9\n")
    with pytest.raises(DataError, match=r"no valid rows: all 2 rows are bad"):  # skipping everything is no result
        transfer_set.read_labelled_sentences(str(all_bad), ["0", "1"], on_error="skip")


def test_config_errors_name_the_key(tmp_path):
    shape = {"vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 16}
    for values, message in (({"hidden_size": 8}, "missing keys 'vocab_size', 'num_hidden_layers'"),
                            ({**shape, "vocab_size": "20"}, "'vocab_size' must be an integer"),
                            ({**shape, "hidden_dropout_prob": "high"}, "'hidden_dropout_prob' must be a number"),
                            ({**shape, "num_attention_heads": 0}, "num_attention_heads must be positive")):
        with pytest.raises(errors.ConfigError, match=message):
            BertConfig.from_dict(values, "x.json")
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "config.json").write_text("{}")
    with pytest.raises(errors.MissingFileError, match="is a run folder, not a model folder: pass .*export"):
        checkpoints.resolve_pretrained(str(tmp_path / "run"))
    with pytest.raises(errors.MissingFileError, match="expected config.json, model.safetensors, vocab.txt"):
        checkpoints.resolve_pretrained(str(tmp_path))
    with pytest.raises(errors.FlagError, match="model=.* is a run folder.*pass model=.*export"):
        validation.model_path("model", str(tmp_path / "run"))
    with pytest.raises(errors.FlagError, match="init_checkpoint=.*nope does not exist"):
        validation.model_path("init_checkpoint", str(tmp_path / "nope"))


def test_bilstm_export_folder_errors(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    with pytest.raises(errors.MissingFileError, match="not a BiLSTM export folder: config.json, labels.json, vocab"):
        read_export_folder(str(folder))
    (folder / "config.json").write_text(json.dumps({"vocab_size": 4}))
    (folder / "labels.json").write_text('["0", "1"]')
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[MASK]\ngood\n")
    with pytest.raises(errors.ConfigError, match="config.json: missing key 'num_labels'"):
        read_export_folder(str(folder))
    with pytest.raises(errors.MissingFileError, match="is a run folder, not an export folder"):
        read_export_folder(str(tmp_path))


def test_writable_output_creates_nothing(tmp_path):
    assert validation.writable_output("output_dir", str(tmp_path / "a" / "b"), folder=True)
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(errors.FlagError, match="output_dir=.* is a file; expected a folder"):
        validation.writable_output("output_dir", str(tmp_path / "f"), folder=True)
    with pytest.raises(errors.FlagError, match="output=.* is a folder; expected a file"):
        validation.writable_output("output", str(tmp_path), folder=False)


def test_data_flags_are_defined_once_for_every_tool():
    values = flags.FlagValues()
    define_data_flags(values)
    define_common_flags(values)  # the same definition: no duplicate-flag error
    define_data_flags(values)
    assert values["skip_bad_rows"].default is False
