"""One run per output folder: an exclusive `fcntl.flock` on `<folder>/.run.lock`, held until the
process ends.

The OS releases the lock when its process dies, however it dies, so the folder of a killed run
can be reused (resumed) at once. The lock file names its holder (pid and command line), so a
second run on the folder is refused with one line saying which process has it. At a normal exit
the lock file is removed, and so is the folder when the lock created it and nothing else was
written there. Every acquisition checks that the file it locked is still the one at the path,
so removing the file of a held lock is safe (a waiting run locks the new file instead).
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import json
import os
import shlex
import sys

from bertdistill.training import validation
from bertdistill.errors import UserError, field, shorten

LOCK_NAME = ".run.lock"


class FolderInUseError(UserError):
    """Another live process holds the lock of the folder."""


@dataclasses.dataclass
class _Held:
    fd: int
    created: str | None  # the outermost folder the lock created (the locked one or a parent of it)
    pid: int  # the process that took it (a forked child must not release it)


_held: dict[str, _Held] = {}


def lock_path(folder: str) -> str:
    return os.path.join(folder, LOCK_NAME)


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the file."""
    try:
        info = json.loads(os.pread(fd, 64 * 1024, 0).decode("utf-8"))
        return f"pid {int(info['pid'])}: {shorten(info['command'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


def _open_locked(folder: str, *, flag: str, shown: str) -> int:
    """An fd holding the exclusive lock of `folder`'s lock file (both created if missing), which
    is still the file at its path once locked. `shown`: the folder as the user gave it."""
    path = lock_path(folder)
    while True:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUseError(f"{field(flag)}={shorten(shown)} is in use by another run ({holder}); wait for "
                                   f"it to end or stop it, or choose another {field(flag)}") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this file as it ended: lock the one at the path now


def lock_folder(folder: str, *, flag: str = "output_dir") -> None:
    """Takes the lock of `folder` (created if missing) for the rest of this process; a
    `FolderInUseError` naming the holder when another live process has it. The folder is
    checked first as `validation.writable_output` does (a file, no permission: a `FlagError`).
    Taking a lock this process already holds does nothing."""
    key = os.path.realpath(folder)
    held = _held.get(key)
    if held is not None:
        try:
            if os.path.samestat(os.fstat(held.fd), os.stat(lock_path(key))):
                return
        except FileNotFoundError:
            pass
        release_folder(folder)  # the folder was removed or replaced since: lock the one there now
    validation.writable_output(flag, folder, folder=True)
    created, missing = None, key
    while not os.path.exists(missing):
        created, missing = missing, os.path.dirname(missing)
    fd = _open_locked(key, flag=flag, shown=folder)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": shlex.join([sys.executable, *sys.argv])}).encode())
    _held[key] = _Held(fd, created, os.getpid())


def release_folder(folder: str) -> None:
    """Releases the lock of `folder` taken by `lock_folder`: removes the lock file (and the folders
    the lock created, when they are empty now), then unlocks."""
    key = os.path.realpath(folder)
    held = _held.pop(key, None)
    if held is None or held.pid != os.getpid():
        return
    try:
        if os.path.samestat(os.fstat(held.fd), os.stat(lock_path(key))):
            os.remove(lock_path(key))
            created = key
            while held.created and created.startswith(held.created):  # from the locked one outwards
                os.rmdir(created)
                created = os.path.dirname(created)
    except OSError:  # gone already, or the run wrote into its folder: keep it
        pass
    os.close(held.fd)


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        release_folder(folder)
