"""The one atomic writer (files.atomic_path) and the one name its leftovers have."""

import os
import subprocess
import sys

import pytest

from bertdistill import files

from bertdistill.training import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_file_replaces_the_previous_one_only_when_complete(tmp_path):
    target = tmp_path / "model.weights.h5"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with files.atomic_path(str(target)) as tmp:
            assert os.path.basename(tmp) == "model.weights.h5"  # the target's own name and extension
            assert os.path.basename(os.path.dirname(tmp)) == f".model.weights.h5.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("stop")
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["model.weights.h5"]
    with files.atomic_path(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
        with open(os.path.join(os.path.dirname(tmp), "scratch"), "w") as f:
            f.write("removed with the temporary folder")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["model.weights.h5"]


def test_a_folder_replaces_the_previous_one_only_when_complete(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(str(target)) as tmp:
            os.mkdir(tmp)
            raise RuntimeError("stop")
    assert os.listdir(target) == ["old.txt"] and os.listdir(tmp_path) == ["export"]
    with files.atomic_path(str(target)) as tmp:
        os.mkdir(tmp)
        with open(os.path.join(tmp, "new.txt"), "w") as f:
            f.write("new")
    assert os.listdir(target) == ["new.txt"] and os.listdir(tmp_path) == ["export"]


def test_the_leftover_name_is_recognised_and_nothing_else():
    assert files.leftover_pid(".export.123.tmp") == 123
    assert files.leftover_pid(".aug.tsv.45.tmp", "aug.tsv") == 45
    assert files.leftover_pid(".aug.tsv.45.tmp", "other.tsv") is None
    for name in ("export.123.tmp", ".export.tmp", ".export.12a.tmp", "eval_results.txt.tmp", ".export.1.tmp.txt"):
        assert files.leftover_pid(name) is None
    assert os.path.basename(files.temporary_path("/x/run_manifest.json", 7)) == ".run_manifest.json.7.tmp"


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_killed_writer_leaves_one_temporary_folder_that_is_cleaned(tmp_path, kind):
    target = tmp_path / "out.tsv"
    target.write_text("previous")
    write = ("open(tmp, 'w').write('partial')" if kind == "file"
             else "os.mkdir(tmp); open(os.path.join(tmp, 'f'), 'w').write('partial')")
    code = (f"import os\nfrom bertdistill import files\nwith files.atomic_path({str(target)!r}) as tmp:\n"
            f"    {write}\n    os._exit(9)\n")
    status = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO}).returncode
    assert status == 9
    left = [name for name in os.listdir(tmp_path) if name != "out.tsv"]
    assert len(left) == 1 and files.leftover_pid(left[0], "out.tsv") is not None
    assert validation.clean_file_debris(str(target)) == [str(tmp_path / left[0])]
    assert os.listdir(tmp_path) == ["out.tsv"] and target.read_text() == "previous"
