"""The scripts' entry point: `run(main)`, absl's `app.run` with `--verbose_errors` defined, the
flags parsed and checked (NaN or infinity in a float flag: `check_finite`), and a user error
(`bertdistill.errors`), a flag error included, printed on one line of stderr with exit status 2
(`--verbose_errors` or `BERTDISTILL_VERBOSE_ERRORS=1` adds the traceback). Any other exception
is a bug: it keeps its traceback and exits with status 1.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from absl import app, flags

from bertdistill.errors import (EXIT_USER_ERROR, VERBOSE_ENV, FlagError, is_user_error, one_line,
                                report)


def _verbose(argv: Sequence[str] | None = None) -> bool:
    if os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    if argv is not None:  # flags not parsed yet
        return any(arg in ("--verbose_errors", "--verbose_errors=true", "--verbose_errors=1") for arg in argv)
    try:
        return bool(flags.FLAGS.verbose_errors)
    except (AttributeError, flags.Error):
        return False


def define_flags(flag_values=None) -> None:
    """Defines `--verbose_errors` on `flag_values` (default: absl's FLAGS); idempotent. The
    scripts' flag definitions and `run` call it."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    if "verbose_errors" not in flag_values:
        flags.DEFINE_bool("verbose_errors", False,
                          f"Print the traceback of user errors too (or set {VERBOSE_ENV}=1).", flag_values=flag_values)


def check_finite(flag_values=None) -> None:
    """Refuses NaN and infinity in every float flag of `flag_values` (default: absl's FLAGS; no
    float flag means them)."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
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
        report(error, verbose=_verbose(argv), flag_names={})
        sys.exit(EXIT_USER_ERROR)


def run(main: Callable[[list[str]], object], argv: list[str] | None = None, *,
        flag_names: Mapping[str, str] | None = None) -> None:
    """`absl.app.run(main, argv)` with `--verbose_errors` defined and one-line user errors (exit
    status 2), config fields shown as flags (`flag_names`: {field: flag} where they differ);
    bugs keep their traceback."""
    define_flags()
    flag_names = dict(flag_names or {})

    def guarded_main(args):
        try:
            return main(args)
        except Exception as error:  # noqa: BLE001 - re-raised unless a user error
            if not is_user_error(error):
                raise
            report(error, verbose=_verbose(), flag_names=flag_names)
            sys.exit(EXIT_USER_ERROR)

    app.run(guarded_main, argv, flags_parser=_parse_flags)
