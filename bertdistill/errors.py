"""User errors: one clear line on stderr and exit status 2; tracebacks are for bugs.

A mistake of the user (a config value, a data file, a path, a permission) raises a `UserError`
(or one of the standard errors listed in `USER_ERRORS`). The library names config fields, not
flags: a message refers to a field as `field("max_seq_length")`, which reads `max_seq_length`
in `str(error)` and `--max_seq_length` (or the flag a script maps it to) in the line a script
prints; a `ConfigFieldError` is about one field and carries its name.

A script prints such an error as

    error: <what, where, what to do>

on one line of stderr (`report`) and exits with status 2 (`EXIT_USER_ERROR`), without a
traceback unless asked (`bertdistill.cli.entry.run`, the scripts' drop-in for
`absl.app.run`). Any other exception is a bug: it keeps its traceback and exits with status 1.
Messages quote at most ~200 characters of the offending input: use `shorten`. This module does
not import absl.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Mapping

EXIT_USER_ERROR = 2
QUOTE_LIMIT = 200
LINE_LIMIT = 1000  # a whole error line, in characters
VERBOSE_ENV = "BERTDISTILL_VERBOSE_ERRORS"


_FIELD_MARK = "\ue000"  # a private-use character: never white space, never a line break
_FIELD = re.compile(f"{_FIELD_MARK}([A-Za-z_][A-Za-z0-9_]*){_FIELD_MARK}")


def field(name: str) -> str:
    """A reference to the config field `name` in an error message: `name` in `str(error)`, the
    field's flag in a script's error line (`render`)."""
    return f"{_FIELD_MARK}{name}{_FIELD_MARK}"


def render(text: str, flag_names: Mapping[str, str] | None = None) -> str:
    """`text` with its field references as the bare field names, or with `flag_names` (a
    mapping, possibly empty: unlisted fields keep their name) as `--<flag>`."""
    if flag_names is None:
        return _FIELD.sub(r"\1", text)
    return _FIELD.sub(lambda match: f"--{flag_names.get(match[1], match[1])}", text)


class UserError(ValueError):
    """A mistake the user can fix; the message (one line) says what, where and what to do, and
    may refer to config fields (`field`)."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(f"{message}; {hint}" if hint else message)
        self.hint = hint  # what to do, also at the end of the message

    def __str__(self) -> str:
        return render(str(self.args[0]) if self.args else "")


class ConfigFieldError(UserError):
    """A bad or missing config value; `field` names it (scripts show the flag of that name). The
    message is prefixed with the field when it does not refer to it."""

    def __init__(self, name: str, message: str, *, hint: str | None = None):
        self.field = name.lstrip("-")
        if field(self.field) not in message and f"--{self.field}" not in message:
            message = f"{field(self.field)}: {message}"
        super().__init__(message, hint=hint)

    @property
    def flag(self) -> str:
        """The field's name, which is also the scripts' flag of it."""
        return self.field


FlagError = ConfigFieldError  # the scripts' checks of their flags raise it naming `--<flag>` in the message


class ConfigError(UserError):
    """A bad configuration file or value (a model config, a JSON file, an export folder)."""


class DataError(UserError):
    """Bad or unavailable input data."""


class MissingFileError(UserError, FileNotFoundError):
    """A required input file or folder does not exist (still a FileNotFoundError)."""


class DataUnavailableError(DataError, RuntimeError):
    """A data set could not be loaded (e.g. tfds without internet; still a RuntimeError)."""


def _flag_errors() -> tuple[type[BaseException], ...]:
    """absl's flag errors, when absl's flags are loaded (else none can have been raised)."""
    flags = sys.modules.get("absl.flags")
    return () if flags is None else (flags.IllegalFlagValueError, flags.UnrecognizedFlagError,
                                     flags.CantOpenFlagFileError)


def _usage_error() -> tuple[type[BaseException], ...]:
    app = sys.modules.get("absl.app")
    return () if app is None else (app.UsageError,)


# Errors `run` reports in one line (exit 2) besides UserError, absl's UsageError and flag errors.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, json.JSONDecodeError)


def is_user_error(error: BaseException) -> bool:
    """True for the errors `run` turns into one `error: ...` line and exit status 2."""
    return isinstance(error, USER_ERRORS + _flag_errors() + _usage_error())


def shorten(text: object, limit: int = QUOTE_LIMIT) -> str:
    """`text` on one line (newlines escaped), cut to `limit` characters with a note of how much
    was left out: for quoting user input in a message."""
    return _cut(str(text).replace("\r", "\\r").replace("\n", "\\n").replace(_FIELD_MARK, "\\ue000"), limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def one_line(message: str) -> str:
    """The non-empty lines of `message` joined with '; ', capped at LINE_LIMIT characters."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return _cut("; ".join(lines), LINE_LIMIT)


def _json_source(error: json.JSONDecodeError) -> str | None:
    """Best effort: the name of the file object a json.load(f) call was reading."""
    tb, name = error.__traceback__, None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if hasattr(value, "read") and isinstance(getattr(value, "name", None), str):
                name = value.name
        tb = tb.tb_next
    return name


_KEEP = object()


def message(error: BaseException, flag_names: Mapping[str, str] | None = None) -> str:
    """What `run` prints after `error: ` (one line); with `flag_names` (see `render`), config
    fields are shown as flags."""
    if isinstance(error, UserError):
        text = str(error.args[0]) if error.args else ""
        text = text if flag_names is _KEEP else render(text, flag_names)
    elif isinstance(error, _flag_errors() + _usage_error()):
        text = str(error)
    elif isinstance(error, json.JSONDecodeError):
        source = _json_source(error)
        where = (f"{shorten(source)}:{error.lineno}:{error.colno}" if source
                 else f"line {error.lineno} column {error.colno}")
        text = f"{where}: invalid JSON ({error.msg}): fix or replace the file"
    elif isinstance(error, OSError) and error.filename is not None:
        path = shorten(error.filename) + (f" -> {shorten(error.filename2)}" if error.filename2 else "")
        text = {
            FileNotFoundError: f"not found: {path}: check the path (and the flag that names it)",
            PermissionError: f"permission denied: {path}: check its permissions or choose another path",
            IsADirectoryError: f"{path} is a folder where a file was expected",
            NotADirectoryError: f"{path}: a part of this path is a file where a folder was expected",
        }.get(type(error), f"{error.strerror}: {path}")
    else:
        text = str(error) or type(error).__name__
    return one_line(text)


def detail(error: BaseException) -> str:
    """`message(error)` with its field references kept: for the message of an error that wraps it."""
    return message(error, _KEEP)


def report(error: BaseException, *, verbose: bool = False, flag_names: Mapping[str, str] | None = None) -> None:
    """Prints `error: <message>` (after the traceback when `verbose`) on stderr."""
    sys.stdout.flush()
    if verbose:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.write(f"error: {message(error, flag_names)}\n")
    sys.stderr.flush()


def read_json(path: str, what: str = "JSON file", hint: str = "fix or replace it") -> object:
    """Loads a JSON file; a missing or malformed file is one error naming it, `what` it should be
    and `hint` (what to do)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MissingFileError(f"{what} not found: {shorten(path)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        detail = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ConfigError(f"{shorten(path)}: {what} is not valid JSON ({detail}): {hint}") from None


def read_json_object(path: str, what: str, hint: str = "fix or replace it") -> dict:
    """`read_json` of a file that must hold a JSON object."""
    value = read_json(path, what, hint)
    if not isinstance(value, dict):
        raise ConfigError(f"{shorten(path)}: {what} is not a JSON object: {hint}")
    return value
