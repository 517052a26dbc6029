"""Writing output files atomically: a temporary file beside the target, renamed over it when
complete, so a killed or failed run never leaves a half-written result (and the previous file stays);
reading safetensors weights, a damaged file being a user error."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TextIO

from bertdistill.errors import ConfigError, shorten


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """A text file to write `path` through: a temporary file beside it, renamed over `path`
    when the block ends normally and removed (leaving any previous `path`) when it raises."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            yield out
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
