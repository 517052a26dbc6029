"""The run manifest: what a run in its run folder (`output_dir`) was started with, so a reused
folder is resumed only by the same run and never silently mixed with another.

`<output_dir>/run_manifest.json` holds the run's settings (a script's flag values, under
`flags`), each data file's path, size and sha256, the model config, anything `extra`, and (not
compared) the package version, `git describe`, the creation time and the folder it was written
in. `check_output_dir` creates, resumes, refuses or (with `overwrite`) clears the folder, never
one that holds an input (the rule for outputs and inputs is `validation.check_outputs`); a folder
moved since is resumed with the paths it recorded read in the new place (`bertdistill.relocation`).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from absl import logging

from bertdistill import relocation
from bertdistill.errors import UserError, field, read_json_object, shorten
from bertdistill.files import atomic_output, leftover_pid
from bertdistill.training.locks import LOCK_NAME
from bertdistill.training.validation import inside, real_path

MANIFEST_NAME = "run_manifest.json"
FORMAT_VERSION = 1
# Settings (flags) that do not change what a run computes into its folder: evaluating or
# predicting with a trained run, logging, error display. Not compared (still recorded).
IGNORED_FLAGS = frozenset({
    "do_train", "do_eval", "do_predict", "do_export", "eval_batch_size", "predict_batch_size", "eval_split",
    "output_dir", "model_dir", "overwrite_output_dir", "verbose_errors", "skip_bad_rows", "log_every_steps",
    "save_checkpoints_steps", "int8_max_drop", "int8_keep_float",
    # Training longer (or stopping differently) continues the same run; the trainer counts steps.
    "num_train_epochs", "early_stopping_patience"})
OVERWRITE_HINT = f"pass {field('overwrite_output_dir')} to start over or choose another {field('output_dir')}"
_MAX_DIFFERENCES = 5


def file_sha256(path: str, chunk_size: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_input(path: str) -> dict:
    if os.path.isdir(path):  # a folder input: its files' names and sizes (cheap, catches most changes)
        digest, size = hashlib.sha256(), 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                file_size = os.path.getsize(full)
                size += file_size
                digest.update(f"{os.path.relpath(full, path)}\0{file_size}\n".encode())
        return {"path": os.path.abspath(path), "kind": "folder", "size": size, "listing_sha256": digest.hexdigest()}
    if not os.path.exists(path):
        from bertdistill.errors import MissingFileError

        raise MissingFileError(f"input file not found: {shorten(path)}")
    return {"path": os.path.abspath(path), "size": os.path.getsize(path), "sha256": file_sha256(path)}


@functools.lru_cache(maxsize=1)
def _code_version() -> dict:
    code = {"bertdistill": "unknown", "git": None}
    try:
        from importlib.metadata import version

        code["bertdistill"] = version("bertdistill")
    except Exception:  # noqa: BLE001 - not installed: still a valid manifest
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: never take the index lock
    try:
        run = functools.partial(subprocess.run, cwd=root, env=env, capture_output=True, text=True, timeout=10)
        described = run(["git", "describe", "--always"])
        if described.returncode == 0:
            status = run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
            dirty = status.returncode == 0 and bool(status.stdout.strip())
            code["git"] = described.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return code


def _jsonable(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def build_manifest(*, flags: Mapping[str, object], data_files: Sequence[str | None],
                   model_config: Mapping | None, extra: Mapping | None = None) -> dict:
    """The manifest of a run: `flags` (the run's settings: a script's flag values), each data
    file's path, size and sha256 (None entries are skipped; a folder is described by its file
    names and sizes), `model_config`, `extra`, and (not compared) the code version and the
    creation time."""
    return {
        "format": FORMAT_VERSION,
        "flags": _jsonable(dict(sorted(flags.items()))),
        "data": [_describe_input(path) for path in dict.fromkeys(os.fspath(p) for p in data_files if p)],
        "model_config": _jsonable(dict(model_config)) if model_config is not None else None,
        "extra": _jsonable(dict(extra)) if extra else {},
        "code": _code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _value(value: object) -> str:
    return "<absent>" if value is _ABSENT else shorten(json.dumps(value), 60)


_ABSENT = object()


def _mapping_differences(prefix: str, old: Mapping | None, new: Mapping | None,
                         ignore: Iterable[str] = (), roots: relocation.Roots | None = None) -> list[str]:
    if old is None or new is None:
        return [] if old is None and new is None else [f"{prefix.rstrip('.')}: {_value(old)} -> {_value(new)}"]
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if not relocation.same_setting(a, b, roots):
            out.append(f"{prefix}{key}: {_value(a)} -> {_value(b)}")
    return out


def _data_differences(old: Sequence[Mapping], new: Sequence[Mapping], roots: relocation.Roots | None) -> list[str]:
    new_paths = {d["path"] for d in new}
    def key(path):  # a recorded path, in the moved folder when that is where the new run reads it
        return path if path in new_paths else relocation.relocate(path, roots)
    old_by_path, new_by_path = {key(d["path"]): d for d in old}, {d["path"]: d for d in new}
    names = [os.path.basename(p) for p in set(old_by_path) | set(new_by_path)]
    def label(path):  # the file name when unique, else the whole path
        return shorten(os.path.basename(path) if names.count(os.path.basename(path)) == 1 else path, 80)
    out = []
    for path in sorted(set(old_by_path) | set(new_by_path)):
        a, b = old_by_path.get(path), new_by_path.get(path)
        if a is None:
            out.append(f"data {label(path)} is new")
        elif b is None:
            out.append(f"data {label(path)} is no longer used")
        elif {**a, "path": path} != b:
            what = "size" if a.get("size") != b.get("size") else "sha256" if "sha256" in a else "files"
            out.append(f"data {label(path)} changed ({what})")
    return out


def differences(old: Mapping, new: Mapping, ignore_flags: Iterable[str] = IGNORED_FLAGS,
                flag_defaults: Mapping[str, object] | None = None, roots: relocation.Roots | None = None) -> list[str]:
    """What differs between two manifests, one short item each (code version, time and folder
    ignored; `old`'s paths also read as moved by `roots`). A flag `old` lacks (one added to the
    toolkit since) matches when `new` has it at its default in `flag_defaults`."""
    ignore_flags = set(ignore_flags)
    out = []
    if old.get("format") != new.get("format"):
        out.append(f"manifest format: {_value(old.get('format'))} -> {_value(new.get('format'))}")
    old_flags, new_flags = old.get("flags") or {}, new.get("flags") or {}
    added_at_default = {name for name, value in _jsonable(dict(flag_defaults or {})).items()
                        if name not in old_flags and new_flags.get(name, _ABSENT) == value}
    out += _mapping_differences("", old_flags, new_flags, ignore_flags | added_at_default, roots)
    out += _data_differences(old.get("data") or [], new.get("data") or [], roots)
    out += _mapping_differences("model_config.", old.get("model_config"), new.get("model_config"), roots=roots)
    out += _mapping_differences("extra.", old.get("extra") or {}, new.get("extra") or {}, roots=roots)
    return out


def manifest_path(output_dir: str) -> str:
    return os.path.join(output_dir, MANIFEST_NAME)


def write_manifest(output_dir: str, manifest: Mapping) -> None:
    """Writes `<output_dir>/run_manifest.json` atomically (`files.atomic_output`), with the
    folder's absolute path."""
    with atomic_output(manifest_path(output_dir)) as f:
        json.dump({**manifest, "folder": os.path.abspath(output_dir)}, f, indent=2)
        f.write("\n")


def read_manifest(output_dir: str) -> dict | None:
    """The manifest of `output_dir`, or None when it has none."""
    path = manifest_path(output_dir)
    if not os.path.exists(path):
        return None
    return read_json_object(path, "the run manifest", OVERWRITE_HINT)


def _check_clearable(output_dir: str, inputs: Iterable[str]) -> None:
    target = real_path(output_dir)
    protected = {"/": "the root folder", real_path("~"): "your home folder",
                 real_path(os.getcwd()): "the current folder"}
    for path, what in protected.items():
        if inside(path, target):
            raise UserError(f"{field('overwrite_output_dir')} would delete {what} ({shorten(path)}): "
                            f"{field('output_dir')}={shorten(output_dir)} is or contains it; choose a dedicated "
                            f"{field('output_dir')}")
    for path in inputs:
        if inside(real_path(path), target):
            raise UserError(f"{field('overwrite_output_dir')} would delete the input {shorten(path)}, which lies "
                            f"inside {field('output_dir')}={shorten(output_dir)}; choose another {field('output_dir')}")


def clear_folder(output_dir: str) -> None:
    """Deletes what `output_dir` holds, except the lock of the run that is clearing it."""
    for name in os.listdir(output_dir):
        if name == LOCK_NAME:
            continue
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def check_output_dir(output_dir: str, manifest: Mapping, *, overwrite: bool,
                     inputs: Sequence[str | None] = (), ignore_flags: Iterable[str] = IGNORED_FLAGS,
                     flag_defaults: Mapping[str, object] | None = None) -> str:
    """Makes `output_dir` ready for the run described by `manifest`; returns what it did:

    - "created": no folder, or an empty one: created, manifest written;
    - "resumed": the folder's manifest matches (code version, time and `ignore_flags` aside; a
      flag it lacks matches at its default in `flag_defaults`);
    - "overwritten": `overwrite` and the folder had contents: they were deleted (never when the
      folder is /, the home folder, the current folder or one of their parents, or holds one of
      the run's inputs: the manifest's data files and `inputs`), new manifest written.

    Raises `UserError` when the folder holds another run (naming up to 5 differences), files but
    no manifest, or is a file.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"{field('output_dir')}={shorten(output_dir)} is a file, not a folder; choose another "
                        f"{field('output_dir')}")
    os.makedirs(output_dir, exist_ok=True)
    contents = [name for name in os.listdir(output_dir)
                if name != LOCK_NAME and leftover_pid(name, MANIFEST_NAME) is None]
    if not contents:
        write_manifest(output_dir, manifest)
        return "created"
    if overwrite:
        _check_clearable(output_dir, [d["path"] for d in manifest.get("data", [])] + [p for p in inputs if p])
        logging.warning("overwrite_output_dir: deleting the contents of %s (%d entries)", output_dir, len(contents))
        clear_folder(output_dir)
        write_manifest(output_dir, manifest)
        return "overwritten"
    old = read_manifest(output_dir)
    if old is None:
        listed = ", ".join(shorten(name, 40) for name in sorted(contents)[:3]) + (", ..." if len(contents) > 3 else "")
        raise UserError(f"{field('output_dir')}={shorten(output_dir)} already holds files ({listed}) but no "
                        f"{MANIFEST_NAME}: not a run of this toolkit, or one from an older version; {OVERWRITE_HINT}")
    found = differences(old, manifest, ignore_flags, flag_defaults,
                        relocation.moved_roots(old.get("folder"), output_dir))
    if found:
        more = f" and {len(found) - _MAX_DIFFERENCES} more" if len(found) > _MAX_DIFFERENCES else ""
        raise UserError(f"{field('output_dir')}={shorten(output_dir)} holds another run: "
                        f"{'; '.join(found[:_MAX_DIFFERENCES])}"
                        f"{more}; {OVERWRITE_HINT}")
    logging.info("Resuming the run in %s (started %s)", output_dir, old.get("created"))
    return "resumed"
