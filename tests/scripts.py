"""One runner for the entry-point tests: a script of the repository in a fresh interpreter."""
import os
import subprocess
import sys

from tests.conftest import REPO


def run_script(script: str, *args: str, check: bool = True, timeout: float = 300, env: dict | None = None,
               **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """Runs `python <REPO>/<script> args...`; with `popen` keyword arguments, starts it and returns the Popen.

    `check`: a non-zero exit fails the test with the end of stderr.
    """
    command = [sys.executable, str(REPO / script), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if popen:
        return subprocess.Popen(command, env=env, cwd=str(REPO), **popen)
    result = subprocess.run(command, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The `error: ...` lines a script printed on stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]
