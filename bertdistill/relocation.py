"""A run folder moved (or copied) elsewhere: the absolute paths its records hold, read in the new place.

A pipeline stage's record and a run manifest name their inputs and outputs by absolute paths and
record the folder they were written in. When that folder is now elsewhere, `moved_roots` gives
the folders the move was between (the old and new paths without the names they end with in
common: `/a/out/teacher_1` now at `/b/res/teacher_1` gives `/a/out` and `/b/res`), and
`same_setting` takes a recorded value as equal to a new one when it is, as written or with its
paths under the old root moved to the new one. Paths outside the moved folder (shared data, an
installed model) stay equal as written; content checks (sizes, sha256) are unchanged.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

Roots = tuple[str, str]


def moved_roots(recorded_folder: str | None, folder: str) -> Roots | None:
    """(old root, new root) when `recorded_folder` (absolute; None for records that predate it) is
    not `folder`, else None."""
    if not recorded_folder:
        return None
    old, new = PurePath(recorded_folder).parts, PurePath(os.path.abspath(folder)).parts
    if old == new:
        return None
    while len(old) > 1 and len(new) > 1 and old[-1] == new[-1]:
        old, new = old[:-1], new[:-1]
    return str(PurePath(*old)), str(PurePath(*new))


def relocate(value: object, roots: Roots | None) -> object:
    """`value` (a string, or lists and dicts of them) with every path under the old root moved to
    the new one. A path starts the string or follows `=` or `,` (`--flag=/a,/b`) and continues
    with `/`, `,` or the end."""
    if roots is None:
        return value
    if isinstance(value, str):
        old, new = (root.rstrip(os.sep) for root in roots)  # the root folder: ""
        end = "(?=/|,|$)" if old else "(?=/)"
        return re.sub(rf"(?<![^=,]){re.escape(old)}{end}", lambda _: new, value)
    if isinstance(value, list):
        return [relocate(item, roots) for item in value]
    if isinstance(value, dict):
        return {key: relocate(item, roots) for key, item in value.items()}
    return value


def same_setting(recorded: object, new: object, roots: Roots | None) -> bool:
    """Whether a recorded value is `new`, as written or moved (`relocate`)."""
    return recorded == new or (roots is not None and relocate(recorded, roots) == new)
