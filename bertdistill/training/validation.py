"""Up-front checks of config values, folders and data files: each failure is a `FlagError` (a
`ConfigFieldError`) naming the field, which a script shows as its flag, raised before any work
starts. `clean_debris` removes what a killed run left behind.

The rule for outputs (`check_outputs`), the same for every command that writes, paths resolved
through symlinks:

1. an output is not, and does not contain, anything the command reads (every input file and
   folder, every model or export folder);
2. an output file does not replace an existing file inside an input folder (a new file beside
   the inputs is fine);
3. nothing is written inside an export folder (a folder holding `export_info.json`) but by
   the command that creates it, which writes it as `<output_dir>/export`, never through a flag.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence

from absl import logging

from bertdistill import files

from bertdistill.models import model_packages
from bertdistill.errors import FlagError, MissingFileError, UserError, field, shorten
from bertdistill.export_format import CONFIG, EXPORT_CONTENTS, EXPORT_INFO, HF_WEIGHTS, VOCAB, load_export_info
# The GLUE TSV layout, as data.Sst2Processor reads it: header of each split.
GLUE_HEADERS = {"train": ["sentence", "label"], "dev": ["sentence", "label"], "test": ["index", "sentence"]}
GLUE_TASKS = ("sst-2", "sst2")
OWN_FILE_TASKS = {"tsv": "tsv", "csv": "csv"}  # task -> extension (header set by the user's columns)
# The bounds of every --seed flag: what NumPy, Python and TensorFlow all accept as a seed.
SEED_BOUNDS = {"lower_bound": 0, "upper_bound": 2**32 - 1}

def _show(value: object) -> str:
    return shorten(value, 200)


def require(name: str, value: object, hint: str | None = None) -> object:
    """`value`, or a FlagError when it is unset (None or empty)."""
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
        raise FlagError(name, f"{field(name)} is required", hint=hint)
    return value


def positive(name: str, value: float | int | None) -> float | int:
    """`value`, or a FlagError unless it is a number > 0."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FlagError(name, f"{field(name)}={_show(value)} must be a positive number")
    return value


def non_negative(name: str, value: float | int | None) -> float | int:
    """`value`, or a FlagError unless it is a number >= 0."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise FlagError(name, f"{field(name)}={_show(value)} must be a number >= 0")
    return value


def in_range(name: str, value: float | int | None, low: float | int, high: float | int) -> float | int:
    """`value`, or a FlagError unless low <= value <= high."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise FlagError(name, f"{field(name)}={_show(value)} must be between {low} and {high}")
    return value


def max_seq_length_fits(max_seq_length: int, config, model: str) -> int:
    """`max_seq_length`, or a FlagError naming `--max_seq_length` when it exceeds the tokens the
    model `config` (a `BertConfig` or `MPNetConfig`) takes: `config.max_sequence_length`, its
    max_position_embeddings (MPNet's positions start after its pad id). `model` names the model
    in the message ("the teacher", a path). The check of every script that reads a model."""
    limit = config.max_sequence_length
    if max_seq_length > limit:
        raise FlagError("max_seq_length", f"{field('max_seq_length')}={max_seq_length} exceeds the {limit} tokens "
                                          f"{model} takes (max_position_embeddings={config.max_position_embeddings})")
    return max_seq_length


def writable_dir(name: str, path: str | None) -> str:
    """`path`, created if needed, after checking a file can be written in it."""
    require(name, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FlagError(name, f"{field(name)}={_show(path)} is a file, not a folder; choose a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = files.temporary_path(os.path.join(path, "write-test"))  # the one leftover name
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise FlagError(name, f"{field(name)}={_show(path)} is not writable ({e.strerror or e}); choose a folder you "
                              "can write to") from None
    return path


def export_folder(name: str, path: str | None, required: Sequence[str] = ()) -> dict:
    """Checks that `path` is an export folder of this toolkit (it has `export_info.json`, and
    every name in `required`); returns its export_info. A run folder holding `export/` gets a
    hint to pass `<path>/export`."""
    require(name, path)
    expected = f"an export folder ({', '.join([EXPORT_CONTENTS, *required])})"
    if not os.path.exists(path):
        raise FlagError(name, f"{field(name)}={_show(path)} does not exist; expected {expected}")
    if not os.path.isdir(path):
        raise FlagError(name, f"{field(name)}={_show(path)} is a file; expected {expected}")
    info_path = os.path.join(path, EXPORT_INFO)
    if not os.path.isfile(info_path):
        inner = os.path.join(path, "export")
        if os.path.isfile(os.path.join(inner, EXPORT_INFO)):
            raise FlagError(name, f"{field(name)}={_show(path)} is a run folder, not an export folder: "
                                  f"pass {field(name)}={_show(inner)}")
        raise FlagError(name, f"{field(name)}={_show(path)} is not an export folder of this toolkit: no {EXPORT_INFO} "
                              f"(expected {EXPORT_CONTENTS})")
    try:
        info = load_export_info(path)
    except UserError as e:
        raise FlagError(name, f"{field(name)}={_show(path)}: {e}") from None
    missing = [item for item in required if not os.path.exists(os.path.join(path, item))]
    if missing:
        raise FlagError(name, f"{field(name)}={_show(path)} lacks {', '.join(missing)}: an export of another model "
                              "kind or an incomplete copy")
    return info


def _first_line(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.readline(64 * 1024)
    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return line.removeprefix("\ufeff")


def split_files(data_dir: str | None, splits: Sequence[str], task: str, *,
                name: str = "data_dir") -> dict[str, str]:
    """Checks the split files a run will read and returns {split: path}.

    GLUE SST-2 (`task` sst-2/sst2): `<split>.tsv` exist, are not empty and start with the header
    data.Sst2Processor expects (`sentence\\tlabel`; test: `index\\tsentence`). With no
    `data_dir` (tfds) nothing is checked. User files (`task` tsv/csv): `<split>.<ext>` exist and
    are not empty (their columns are checked when read).
    """
    key = task.lower()
    if key not in GLUE_TASKS and key not in OWN_FILE_TASKS:
        raise FlagError("task_name", f"{field('task_name')}={_show(task)}: no file layout known for this task; "
                                     f"known: {sorted(GLUE_TASKS + tuple(OWN_FILE_TASKS))}")
    if not data_dir:
        if key in GLUE_TASKS:
            return {}
        raise FlagError(name, f"{field(name)} is required for {field('task_name')}={task}: a folder with "
                              f"{', '.join(f'{s}.{OWN_FILE_TASKS[key]}' for s in splits)}")
    if not os.path.isdir(data_dir):
        raise FlagError(name, f"{field(name)}={_show(data_dir)} is not a folder"
                              f"{' (it does not exist)' if not os.path.exists(data_dir) else ''}")
    extension = OWN_FILE_TASKS.get(key, "tsv")
    paths = {}
    for split in splits:
        if key in GLUE_TASKS and split not in GLUE_HEADERS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(GLUE_HEADERS)}")
        path = os.path.join(data_dir, f"{split}.{extension}")
        layout = (" (expected the GLUE SST-2 layout: train.tsv, dev.tsv, test.tsv)" if key in GLUE_TASKS else "")
        if not os.path.isfile(path):
            raise FlagError(name, f"{field(name)}={_show(data_dir)} has no {split}.{extension}{layout}")
        if os.path.getsize(path) == 0:
            raise FlagError(name, f"{_show(path)} is empty; check {field(name)}")
        if key in GLUE_TASKS:
            header = [h.strip() for h in _first_line(path).split("\t")]
            if header != GLUE_HEADERS[split]:
                raise FlagError(name, f"{_show(path)}:1: expected header {GLUE_HEADERS[split]}, got "
                                      f"{shorten(header)}; is {field(name)} a GLUE SST-2 folder?")
        paths[split] = path
    return paths


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours: left by an earlier, failed step of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours to signal
        return True
    return True


def clean_debris(output_dir: str, export_dir: str | None = None) -> list[str]:
    """Removes what killed writers left at the top of `output_dir` and beside its export folder
    (`export_dir`, default `<output_dir>/export`): the temporary folders of `files.atomic_path`
    (`.<name>.<pid>.tmp`) whose process is gone. Returns the removed paths; nothing else (other
    names, symlinks, anything deeper) is touched."""
    folders = {os.path.abspath(output_dir),
               os.path.dirname(os.path.abspath(export_dir or os.path.join(output_dir, "export")))}
    removed = []
    for folder in sorted(folders):
        if os.path.isdir(folder):
            removed += _remove_leftovers(folder)
    return removed


def _remove_leftovers(folder: str, name: str | None = None) -> list[str]:
    """Removes the leftovers of dead writers in `folder` (of the target `name`, when given)."""
    removed = []
    for entry in sorted(os.listdir(folder)):
        pid = files.leftover_pid(entry, name)
        path = os.path.join(folder, entry)
        if pid is None or _alive(pid) or os.path.islink(path):
            continue  # not a leftover, or another live process is writing it
        files.remove(path)
        removed.append(path)
    for path in removed:
        logging.warning("Removed %s, left by an interrupted run", path)
    return removed


def real_path(path: str) -> str:
    """`path` absolute, `~` expanded and symlinks resolved (also of a path that does not exist yet)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def inside(path: str, folder: str) -> bool:
    """True when the real path `path` is the real path `folder` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _export_folder_holding(path: str) -> str | None:
    """The nearest folder at or above the real path `path` that is an export folder, if any."""
    folder = path
    while True:
        if os.path.isfile(os.path.join(folder, EXPORT_INFO)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_outputs(outputs: Mapping[str, str | None], inputs: Iterable[str | None], *,
                  folders: Collection[str] = ("output_dir",), may_hold_inputs: Collection[str] = ()) -> None:
    """Refuses, with a `FlagError` naming the output flag, any output that breaks the module's
    rule for outputs. `outputs`: {flag: path} (unset ones are skipped); the flags in `folders`
    are output folders, the others output files. `inputs`: every path the command reads.
    `may_hold_inputs`: output folders that may hold an input (a run folder that is only
    evaluated reads its own `export/` and writes its result files beside it)."""
    sources = [(path, real_path(model_packages.short_name_location(path) or path))
               for path in dict.fromkeys(p for p in inputs if p)]
    for flag, path in outputs.items():
        if not path:
            continue
        output, is_folder = real_path(path), flag in folders
        for given, source in sources:
            if source == output:
                raise FlagError(flag, f"{field(flag)}={_show(path)} is also an input ({_show(given)}): a command never "
                                      f"writes over what it reads; choose another {field(flag)}")
            if inside(source, output) and flag not in may_hold_inputs:
                raise FlagError(flag, f"the input {_show(given)} lies inside {field(flag)}={_show(path)}: writing there "
                                      f"could destroy it; choose another {field(flag)}")
            if not is_folder and os.path.isdir(source) and inside(output, source) and os.path.lexists(output):
                raise FlagError(flag, f"{field(flag)}={_show(path)} would replace a file inside the input folder "
                                      f"{_show(given)}; write a new file, or choose another {field(flag)}")
        export = _export_folder_holding(output if is_folder else os.path.dirname(output))
        if export is not None:
            raise FlagError(flag, f"{field(flag)}={_show(path)} is inside the export folder {_show(export)}: only the "
                                  f"command that makes an export writes into it; choose another {field(flag)}")


def writable_output(name: str, path: str | None, *, folder: bool) -> str:
    """Checks, without creating anything, that the output `path` (a folder when `folder`, else a
    file) can be written: an existing path has the right kind and is writable, else its nearest
    existing parent is a writable folder. Returns `path`."""
    require(name, path)
    kind = "folder" if folder else "file"
    if os.path.exists(path):
        if os.path.isdir(path) != folder:
            raise FlagError(name, f"{field(name)}={_show(path)} is a {'file' if folder else 'folder'}; expected a {kind}")
        target = path
    else:
        target = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(target):
            target = os.path.dirname(target)
        if not os.path.isdir(target):
            raise FlagError(name, f"{field(name)}={_show(path)}: {_show(target)} is a file, so the {kind} cannot be "
                                  "created; choose another path")
    if not os.access(target, os.W_OK | (os.X_OK if os.path.isdir(target) else 0)):
        raise FlagError(name, f"{field(name)}={_show(path)} is not writable ({_show(target)}: permission denied); "
                              "choose a path you can write to")
    return path


def clean_file_debris(path: str) -> list[str]:
    """Removes what killed writers of the output `path` left beside it (`files.atomic_path`'s
    `.<name>.<pid>.tmp` of a process that is gone); nothing else in that folder is touched.
    Returns the removed paths."""
    folder, name = os.path.split(os.path.abspath(path))
    return _remove_leftovers(folder, name) if os.path.isdir(folder) else []


def non_empty(examples: Sequence, what: str) -> Sequence:
    """`examples`, or a `DataError` when there are none (e.g. a file with only its header)."""
    if not examples:
        from bertdistill.errors import DataError

        raise DataError(f"{what} has no examples: check the file (a header alone is not enough)")
    return examples


MODEL_FOLDER_CONTENTS = f"{CONFIG}, {HF_WEIGHTS}, {VOCAB}"


def model_path(name: str, path: str | None) -> str | None:
    """Checks `--<name>` names a model: a folder with a `config.json` (a Hugging Face BERT folder
    or an export folder) or a TF checkpoint prefix (`<path>.index`). A run folder of this toolkit
    gets a hint to pass its `export/`. None (the default model) passes, and so does a short
    name of an installed model package (`minilm`, `mpnet`) where no path of that name exists."""
    if not path:
        return path
    if path in model_packages.SHORT_NAMES and not os.path.exists(path):
        try:
            model_packages.check_installed(path)
        except MissingFileError as e:
            raise FlagError(name, f"{field(name)}={path}: {e}") from None
        return path
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, CONFIG)):
            return path
        inner = os.path.join(path, "export")
        if os.path.isfile(os.path.join(inner, CONFIG)):
            raise FlagError(name, f"{field(name)}={_show(path)} is a run folder, not a model folder: pass "
                                  f"{field(name)}={_show(inner)}")
        raise FlagError(name, f"{field(name)}={_show(path)} is not a model folder: expected {MODEL_FOLDER_CONTENTS} "
                              "inside (a Hugging Face BERT folder or an export folder)")
    if os.path.isfile(path + ".index"):
        return path
    if os.path.isfile(path):
        raise FlagError(name, f"{field(name)}={_show(path)} is a file; expected a model folder ({MODEL_FOLDER_CONTENTS}) "
                              "or a TF checkpoint prefix (<prefix>.index)")
    raise FlagError(name, f"{field(name)}={_show(path)} does not exist; expected a model folder "
                          f"({MODEL_FOLDER_CONTENTS}) or a TF checkpoint prefix (<prefix>.index)")
