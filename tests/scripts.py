"""One runner for the entry-point tests: a script of the repository in a fresh interpreter; and
what the multi-worker tests share: a TF_CONFIG per worker on localhost, waiting for processes."""
import json
import os
import socket
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker_environments(count: int = 2) -> list[dict[str, str]]:
    """`TF_CONFIG` of each worker of a cluster of `count` on localhost (free ports)."""
    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(count)]}
    return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
            for i in range(count)]


def finish(processes: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    """(exit status, stderr) of each process started with `stderr=PIPE, text=True`; any still
    running after `timeout` seconds (each) is killed."""
    results = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=timeout)
            results.append((process.returncode, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results
