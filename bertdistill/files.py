"""Writing outputs atomically, files and folders alike, and reading safetensors weights (a damaged
file being a user error).

Every output of the toolkit (result files, manifests, weights, vocabularies, export folders,
Hugging Face folders, figures) is written through `atomic_path`: into a private temporary
folder beside the target, named

    .<target name>.<pid>.tmp/<target name>

and moved onto the target only when complete, so a killed or failed run never leaves a
half-written result and the previous one stays. The written path keeps the target's own name
(libraries that check a file's extension, such as Keras' `.weights.h5` or matplotlib's `.png`,
write it unchanged). That temporary folder is the only thing a killed writer leaves behind:
`leftover_pid` recognises the name, and `bertdistill.training.validation.clean_debris` /
`clean_file_debris` remove it once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any, TextIO

from bertdistill.errors import ConfigError, shorten

# `.<target name>.<pid>.tmp`: what a writer builds beside its target (a killed one leaves it).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
_PREVIOUS = ".previous"  # inside the temporary folder: a replaced folder, until it is deleted


def temporary_path(path: str, pid: int | None = None) -> str:
    """`.<name of path>.<pid>.tmp` beside `path`: the temporary folder a writer of `path` (process
    `pid`, default this one) builds it in, the one name of anything temporary the toolkit writes."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid() if pid is None else pid}.tmp")


def leftover_pid(entry: str, name: str | None = None) -> int | None:
    """The process id in `entry` (a file or folder name) when it is a writer's temporary folder
    (of the target `name`, when given), else None."""
    match = _TEMPORARY.match(entry)
    if match is None or (name is not None and match.group("name") != name):
        return None
    return int(match.group("pid"))


def remove(path: str) -> None:
    """Deletes the file, link or folder `path`."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """The path to write `path` through: `<temporary folder>/<name of path>` (see the module
    docstring). Write a file or a folder there; when the block ends normally it replaces
    `path` (a file atomically; a folder by moving the previous one aside first, then deleting it)
    and when it raises, everything written is removed and any previous `path` stays. Scratch
    files may go beside the yielded path: the temporary folder is private to this write."""
    target = os.path.abspath(path)
    work = temporary_path(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(work):  # left by an earlier, failed step of this process
        remove(work)
    os.mkdir(work)  # default permissions (mkdtemp's 0700 would make a folder output private)
    try:
        built = os.path.join(work, os.path.basename(target))
        yield built
        if os.path.isdir(built) and os.path.lexists(target):
            os.rename(target, os.path.join(work, _PREVIOUS))
        os.replace(built, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """A UTF-8 text file to write `path` through (`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        yield out


@contextlib.contextmanager
def safetensors_file(path: str) -> Iterator[Any]:
    """`safetensors.safe_open(path, "numpy")`; a truncated or damaged file (while opening or
    reading it) is a `ConfigError` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "numpy") as f:
            yield f
    except SafetensorError as e:
        raise ConfigError(f"{shorten(path)} is not a complete safetensors file ({e}): truncated or damaged; "
                          "copy or export the model again") from None
