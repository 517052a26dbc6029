"""Helpers of the reliability tests: a folder's fingerprint and the one-line user-error check."""
import hashlib
import os

from tests.scripts import error_lines


def fingerprint(folder) -> dict[str, str]:
    """{relative path: sha256 (or 'dir')} of everything under `folder` ({} when it does not exist)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def assert_user_error(result, *words) -> str:
    """Exit status 2, one `error:` line holding every word, no traceback; returns the line."""
    lines = error_lines(result)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
