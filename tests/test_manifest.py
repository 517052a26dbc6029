"""Run manifest: new folder, resume, each difference named, foreign folders refused, overwrite."""
import hashlib
import io
import json
import os

import pytest

from bertdistill import errors

from bertdistill.training import locks, manifest
from bertdistill.errors import MissingFileError, UserError

FLAGS = {"learning_rate": 5e-05, "task_name": "sst-2", "num_train_epochs": 3.0, "do_eval": True}
CONFIG = {"hidden_size": 8, "num_hidden_layers": 2}


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nbad\t0\n")
    return folder


def build(data_dir, flags=None, config=CONFIG, extra=None):
    return manifest.build_manifest(flags=flags or FLAGS, data_files=[str(data_dir / "train.tsv"),
                                                                     str(data_dir / "dev.tsv"), None],
                                   model_config=config, extra=extra)


def test_manifest_contents(data_dir):
    m = build(data_dir)
    assert m["flags"] == dict(sorted(FLAGS.items())) and m["model_config"] == CONFIG
    train = m["data"][0]
    assert train["path"] == str(data_dir / "train.tsv") and train["size"] == 22
    assert train["sha256"] == hashlib.sha256((data_dir / "train.tsv").read_bytes()).hexdigest()
    assert len(m["data"]) == 2 and m["code"]["bertdistill"] and "created" in m
    json.dumps(m)


def test_a_data_file_is_hashed_once_in_bounded_chunks(tmp_path, data_dir, monkeypatch):
    """What keeps hashing a large training file cheap: one pass, in chunks of at most 1 MiB (never
    the whole file in memory), and one hash per distinct file of the manifest."""
    path = tmp_path / "big.tsv"
    content = os.urandom((5 << 20) + 123)  # 5 whole chunks and a partial one
    path.write_bytes(content)
    opened, reads = [], []

    class CountingFile(io.FileIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

    def counting_open(file, mode="r", *args, **kwargs):
        assert mode == "rb", mode
        opened.append(os.fspath(file))
        return CountingFile(file, "r")

    monkeypatch.setattr(manifest, "open", counting_open, raising=False)
    assert manifest.file_sha256(str(path)) == hashlib.sha256(content).hexdigest()
    assert opened == [str(path)]
    assert reads == [1 << 20] * 7  # 5 full chunks, the partial one, the empty read at the end

    hashed = []
    file_sha256 = manifest.file_sha256
    monkeypatch.setattr(manifest, "file_sha256", lambda p: hashed.append(p) or file_sha256(p))
    train, dev = str(data_dir / "train.tsv"), str(data_dir / "dev.tsv")
    built = manifest.build_manifest(flags=FLAGS, data_files=[train, dev, train, None], model_config=None)
    assert hashed == [train, dev] and [entry["path"] for entry in built["data"]] == [train, dev]


def test_missing_data_file_is_a_user_error(tmp_path):
    with pytest.raises(MissingFileError, match="nope.tsv"):
        manifest.build_manifest(flags={}, data_files=[str(tmp_path / "nope.tsv")], model_config=None)


def test_new_folder_then_resume(tmp_path, data_dir):
    out = tmp_path / "out"
    assert manifest.check_output_dir(str(out), build(data_dir), overwrite=False) == "created"
    written = json.loads((out / manifest.MANIFEST_NAME).read_text())
    assert written["flags"]["learning_rate"] == 5e-05
    (out / "checkpoints").mkdir()
    again = build(data_dir, flags={**FLAGS, "do_eval": False})  # action flags do not matter
    again["code"] = {"bertdistill": "9.9", "git": "other"}
    again["created"] = "later"
    assert manifest.check_output_dir(str(out), again, overwrite=False) == "resumed"
    assert json.loads((out / manifest.MANIFEST_NAME).read_text())["created"] == written["created"]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_empty_existing_folder_is_used(tmp_path, data_dir):
    (tmp_path / "out").mkdir()
    assert manifest.check_output_dir(str(tmp_path / "out"), build(data_dir), overwrite=False) == "created"


@pytest.mark.parametrize("change, expected", [
    (lambda d: build(d, flags={**FLAGS, "learning_rate": 0.001}), "learning_rate: 5e-05 -> 0.001"),
    (lambda d: build(d, flags={**FLAGS, "seed": 1}), "seed: <absent> -> 1"),
    (lambda d: build(d, config={**CONFIG, "hidden_size": 16}), "model_config.hidden_size: 8 -> 16"),
    (lambda d: build(d, extra={"teacher": "t1"}), 'extra.teacher: <absent> -> "t1"'),
])
def test_each_difference_is_named(tmp_path, data_dir, change, expected):
    out = str(tmp_path / "out")
    manifest.check_output_dir(out, build(data_dir), overwrite=False)
    with pytest.raises(UserError) as error:
        manifest.check_output_dir(out, change(data_dir), overwrite=False)
    message = errors.message(error.value, {})  # as a script shows it
    assert expected in message and "pass --overwrite_output_dir to start over or choose another --output_dir" in message
    assert "\n" not in message


def test_a_flag_added_since_matches_at_its_default(tmp_path, data_dir):
    out = str(tmp_path / "out")
    manifest.check_output_dir(out, build(data_dir), overwrite=False)  # a run from before the flag existed
    defaults = {"new_weight": 0.0}
    at_default = build(data_dir, flags={**FLAGS, "new_weight": 0.0})
    assert manifest.check_output_dir(out, at_default, overwrite=False, flag_defaults=defaults) == "resumed"
    with pytest.raises(UserError, match=r"new_weight: <absent> -> 0\.5"):
        manifest.check_output_dir(out, build(data_dir, flags={**FLAGS, "new_weight": 0.5}), overwrite=False,
                                  flag_defaults=defaults)
    with pytest.raises(UserError, match=r"new_weight: <absent> -> 0\.0"):  # without defaults: another run
        manifest.check_output_dir(out, at_default, overwrite=False)


def test_data_change_detected(tmp_path, data_dir):
    out = str(tmp_path / "out")
    manifest.check_output_dir(out, build(data_dir), overwrite=False)
    (data_dir / "train.tsv").write_text("sentence\tlabel\nfine\t1\n")  # same size, other bytes
    with pytest.raises(UserError, match=r"data train\.tsv changed \(sha256\)"):
        manifest.check_output_dir(out, build(data_dir), overwrite=False)
    (data_dir / "train.tsv").write_text("sentence\tlabel\nmuch longer\t1\n")
    with pytest.raises(UserError, match=r"data train\.tsv changed \(size\)"):
        manifest.check_output_dir(out, build(data_dir), overwrite=False)
    other = manifest.build_manifest(flags=FLAGS, data_files=[str(data_dir / "dev.tsv")], model_config=CONFIG)
    with pytest.raises(UserError, match=r"data train\.tsv is no longer used"):
        manifest.check_output_dir(out, other, overwrite=False)


def test_at_most_five_differences_are_listed(tmp_path, data_dir):
    out = str(tmp_path / "out")
    manifest.check_output_dir(out, build(data_dir), overwrite=False)
    many = build(data_dir, flags={**FLAGS, **{f"flag_{i}": i for i in range(8)}})
    with pytest.raises(UserError, match="and 3 more") as error:
        manifest.check_output_dir(out, many, overwrite=False)
    assert str(error.value).count("<absent> ->") == 5


def test_folder_without_manifest_is_refused(tmp_path, data_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"already holds files \(notes\.txt\) but no run_manifest\.json.*"
                                        r"overwrite_output_dir"):
        manifest.check_output_dir(str(out), build(data_dir), overwrite=False)
    assert (out / "notes.txt").exists()


def test_corrupt_manifest_is_a_user_error(tmp_path, data_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / manifest.MANIFEST_NAME).write_text("{half")
    with pytest.raises(UserError, match=r"run_manifest.json: the run manifest is not valid JSON \(.* at line 1 column 2\): "
                                        r"pass overwrite_output_dir to start over or choose another output_dir"):
        manifest.check_output_dir(str(out), build(data_dir), overwrite=False)


def test_output_dir_that_is_a_file(tmp_path, data_dir):
    (tmp_path / "out").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        manifest.check_output_dir(str(tmp_path / "out"), build(data_dir), overwrite=False)


def test_overwrite_clears_contents(tmp_path, data_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "ckpt-1.index").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    os.symlink(outside, out / "link")
    assert manifest.check_output_dir(str(out), build(data_dir), overwrite=True) == "overwritten"
    assert os.listdir(out) == [manifest.MANIFEST_NAME] and outside.read_text() == "keep"


def test_the_lock_file_is_not_a_run_s_content(tmp_path, data_dir):
    out = tmp_path / "out"
    locks.lock_folder(str(out))
    try:
        assert manifest.check_output_dir(str(out), build(data_dir), overwrite=False) == "created"
        (out / "old.txt").write_text("x")
        assert manifest.check_output_dir(str(out), build(data_dir), overwrite=True) == "overwritten"
        assert sorted(os.listdir(out)) == sorted([locks.LOCK_NAME, manifest.MANIFEST_NAME])  # still locked
    finally:
        locks.release_folder(str(out))
    stale = tmp_path / "killed"  # the lock file of a killed run
    stale.mkdir()
    (stale / locks.LOCK_NAME).write_text('{"pid": 999999, "command": "python x.py"}')
    assert manifest.check_output_dir(str(stale), build(data_dir), overwrite=False) == "created"


def test_overwrite_refuses_dangerous_targets(tmp_path, data_dir, monkeypatch):
    m = build(data_dir)
    for target in ("/", os.path.expanduser("~")):
        with pytest.raises(UserError, match="would delete"):
            manifest.check_output_dir(target, m, overwrite=True)
    (tmp_path / "runs" / "teacher" / "export").mkdir(parents=True)
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "file").write_text("x")
    monkeypatch.chdir(work / "sub")
    for target in (str(work / "sub"), ".", str(work)):
        with pytest.raises(UserError, match="the current folder"):
            manifest.check_output_dir(target, m, overwrite=True)
    with pytest.raises(UserError, match=r"would delete the input .*train\.tsv"):
        manifest.check_output_dir(str(data_dir), m, overwrite=True)
    with pytest.raises(UserError, match=r"would delete the input .*teacher"):
        manifest.check_output_dir(str(tmp_path / "runs"), m, overwrite=True,
                                  inputs=[None, str(tmp_path / "runs" / "teacher" / "export")])
    assert (work / "sub" / "file").exists() and (data_dir / "train.tsv").exists()
    assert os.listdir(tmp_path / "runs") == ["teacher"]


def test_a_moved_folder_resumes_with_its_inputs_read_in_the_new_place(tmp_path, data_dir):
    """A run folder and the input beside it moved together (a pipeline's folder renamed): the
    recorded paths under the old place read in the new one, an input outside stays as written,
    and the content checks still hold."""
    pipeline = tmp_path / "old"
    (pipeline / "teacher").mkdir(parents=True)
    (pipeline / "teacher" / "logits.tsv").write_text("0.1\t0.9\n")
    def run(root):
        flags = {**FLAGS, "output_dir": str(root / "student"), "teacher": str(root / "teacher" / "logits.tsv"),
                 "data_dir": str(data_dir)}
        return manifest.build_manifest(flags=flags, data_files=[str(root / "teacher" / "logits.tsv"),
                                                                str(data_dir / "train.tsv")], model_config=CONFIG)
    manifest.check_output_dir(str(pipeline / "student"), run(pipeline), overwrite=False)
    assert json.loads((pipeline / "student" / manifest.MANIFEST_NAME).read_text())["folder"] == str(pipeline / "student")
    moved = pipeline.rename(tmp_path / "new")
    assert manifest.check_output_dir(str(moved / "student"), run(moved), overwrite=False) == "resumed"
    (moved / "teacher" / "logits.tsv").write_text("0.9\t0.1\n")  # the moved input changed since
    with pytest.raises(UserError, match=r"data logits\.tsv changed \(sha256\)"):
        manifest.check_output_dir(str(moved / "student"), run(moved), overwrite=False)
    other = {**run(moved), "flags": {**run(moved)["flags"], "teacher": str(tmp_path / "elsewhere.tsv")}}
    with pytest.raises(UserError, match=r"holds another run: teacher: \"/"):  # another teacher file
        manifest.check_output_dir(str(moved / "student"), other, overwrite=False)
