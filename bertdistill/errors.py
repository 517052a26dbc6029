"""User errors: one clear line on stderr and exit status 2; tracebacks are for bugs.

A mistake of the user (a flag, a config, a data file, a path, a permission) raises a `UserError`
(or one of the standard errors listed in `USER_ERRORS`). `run(main)` is a drop-in for
`absl.app.run(main)` that prints such an error as

    error: <what, where, what to do>

on one line of stderr and exits with status 2, without a traceback; `--verbose_errors` or the
environment variable `BERTDISTILL_VERBOSE_ERRORS=1` also prints the traceback. Flag parsing
errors (an unknown flag, a bad value, NaN or infinity in a float flag: `check_finite`) are
reported the same way. Any other exception is a bug:
it keeps its traceback and exits with status 1. Messages quote at most ~200 characters of the
offending input: use `shorten`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import flags

EXIT_USER_ERROR = 2
QUOTE_LIMIT = 200
LINE_LIMIT = 1000  # a whole error line, in characters
VERBOSE_ENV = "BERTDISTILL_VERBOSE_ERRORS"


class UserError(ValueError):
    """A mistake the user can fix; the message (one line) says what, where and what to do."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(f"{message}; {hint}" if hint else message)


class FlagError(UserError):
    """A bad or missing command-line flag; the message names `--<flag>`."""

    def __init__(self, flag: str, message: str, *, hint: str | None = None):
        self.flag = flag.lstrip("-")
        if f"--{self.flag}" not in message:
            message = f"--{self.flag}: {message}"
        super().__init__(message, hint=hint)


class ConfigError(UserError):
    """A bad configuration file or value (a model config, a JSON file, an export folder)."""


class DataError(UserError):
    """Bad or unavailable input data."""


class MissingFileError(UserError, FileNotFoundError):
    """A required input file or folder does not exist (still a FileNotFoundError)."""


class DataUnavailableError(DataError, RuntimeError):
    """A data set could not be loaded (e.g. tfds without internet; still a RuntimeError)."""


def _flag_errors() -> tuple[type[BaseException], ...]:
    return (flags.IllegalFlagValueError, flags.UnrecognizedFlagError, flags.CantOpenFlagFileError)


def _usage_error() -> type[BaseException]:
    from absl import app

    return app.UsageError


# Errors `run` reports in one line (exit 2) besides UserError, absl's UsageError and flag errors.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, json.JSONDecodeError)


def is_user_error(error: BaseException) -> bool:
    """True for the errors `run` turns into one `error: ...` line and exit status 2."""
    return isinstance(error, USER_ERRORS + _flag_errors() + (_usage_error(),))


def shorten(text: object, limit: int = QUOTE_LIMIT) -> str:
    """`text` on one line (newlines escaped), cut to `limit` characters with a note of how much
    was left out: for quoting user input in a message."""
    text = str(text).replace("\r", "\\r").replace("\n", "\\n")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def one_line(message: str) -> str:
    """The non-empty lines of `message` joined with '; ', capped at LINE_LIMIT characters."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return shorten("; ".join(lines), LINE_LIMIT)


def _json_source(error: json.JSONDecodeError) -> str | None:
    """Best effort: the name of the file object a json.load(f) call was reading."""
    tb, name = error.__traceback__, None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if hasattr(value, "read") and isinstance(getattr(value, "name", None), str):
                name = value.name
        tb = tb.tb_next
    return name


def message(error: BaseException) -> str:
    """What `run` prints after `error: ` (one line)."""
    if isinstance(error, UserError) or isinstance(error, _flag_errors()) or isinstance(error, _usage_error()):
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


def _verbose(argv: Sequence[str] | None = None) -> bool:
    if os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    if argv is not None:  # flags not parsed yet
        return any(arg in ("--verbose_errors", "--verbose_errors=true", "--verbose_errors=1") for arg in argv)
    try:
        return bool(flags.FLAGS.verbose_errors)
    except (AttributeError, flags.Error):
        return False


def report(error: BaseException, *, verbose: bool = False) -> None:
    """Prints `error: <message>` (after the traceback when `verbose`) on stderr."""
    sys.stdout.flush()
    if verbose:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.write(f"error: {message(error)}\n")
    sys.stderr.flush()


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines `--verbose_errors` (idempotent; also done on import)."""
    if "verbose_errors" not in flag_values:
        flags.DEFINE_bool("verbose_errors", False,
                          f"Print the traceback of user errors too (or set {VERBOSE_ENV}=1).", flag_values=flag_values)


define_flags()


def check_finite(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Refuses NaN and infinity in every float flag of `flag_values` (no float flag means them)."""
    for name in flag_values:
        flag = flag_values[name]
        if isinstance(flag.parser, flags.FloatParser) and flag.value is not None and not math.isfinite(flag.value):
            raise FlagError(name, f"--{name}={flag.value} must be a finite number")


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        args = flags.FLAGS(argv)
        check_finite(flags.FLAGS)
        return args
    except (flags.Error, FlagError) as error:
        if isinstance(error, flags.Error):
            error.args = (f"{one_line(str(error))}; pass --helpshort to list the flags",)
        report(error, verbose=_verbose(argv))
        sys.exit(EXIT_USER_ERROR)


def run(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """`absl.app.run(main, argv)` with one-line user errors (exit status 2); bugs keep their traceback."""
    from absl import app

    def guarded_main(args):
        try:
            return main(args)
        except Exception as error:  # noqa: BLE001 - re-raised unless a user error
            if not is_user_error(error):
                raise
            report(error, verbose=_verbose())
            sys.exit(EXIT_USER_ERROR)

    app.run(guarded_main, argv, flags_parser=_parse_flags)


def read_json(path: str, what: str = "JSON file") -> object:
    """Loads a JSON file; a missing or malformed file is a `ConfigError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MissingFileError(f"{what} not found: {shorten(path)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        detail = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ConfigError(f"{shorten(path)}: {what} is not valid JSON ({detail}): fix or replace it") from None
