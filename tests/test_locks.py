"""bertdistill/training/locks.py: one process per folder, the holder named, the lock gone with its process
(kill -9), taken again by its holder at no cost, and the folder left as the lock found it."""
import json
import os
import subprocess
import sys

import pytest

from bertdistill.training import locks
from bertdistill.errors import FlagError
from tests.conftest import REPO

HOLDER = ("import sys; from bertdistill.training import locks; locks.lock_folder(sys.argv[1]); print('locked', flush=True); "
          "sys.stdin.read()")


def test_a_folder_held_by_a_live_process_is_refused_naming_it_and_free_once_it_is_killed(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(locks.FolderInUseError,
                           match=rf"output_dir=.*run is in use by another run \(pid {holder.pid}: .* -c "):
            locks.lock_folder(str(folder))
    finally:
        holder.kill()
        holder.wait()
    assert (folder / locks.LOCK_NAME).exists()  # the killed holder's file, no longer locked
    locks.lock_folder(str(folder))
    locks.lock_folder(str(folder))  # held already: nothing to do
    assert json.loads((folder / locks.LOCK_NAME).read_text())["pid"] == os.getpid()
    locks.release_folder(str(folder))
    assert os.listdir(folder) == []


def test_the_lock_leaves_the_folder_as_it_found_it(tmp_path):
    new, used = tmp_path / "new" / "run", tmp_path / "used"
    locks.lock_folder(str(new))
    assert new.is_dir()
    locks.release_folder(str(new))
    assert os.listdir(tmp_path) == []  # created by the lock, nothing written: gone again, with its parent
    locks.lock_folder(str(used))
    (used / "result.txt").write_text("kept")
    locks.release_folder(str(used))
    assert os.listdir(used) == ["result.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(FlagError, match="output_dir=.*file is a file; expected a folder"):
        locks.lock_folder(str(tmp_path / "file"))
