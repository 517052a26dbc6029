"""One runner for the entry-point tests: a script of the repository in a fresh interpreter (also
one killed at a known checkpoint); and what the multi-worker tests share: a TF_CONFIG per worker
on localhost, waiting for processes."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# The trainer's test-only hook (bertdistill/training/trainer.py): the process SIGKILLs itself right after
# writing its first checkpoint of a step >= the value. Named here, not imported: no TensorFlow.
KILL_AT_STEP = "BERTDISTILL_TEST_KILL_AT_STEP"


def run_script(script: str, *args: str, check: bool = True, timeout: float = 300, env: dict | None = None,
               toolkit: Path = REPO, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """Runs `python <toolkit>/<script> args...` from `toolkit` (the repository, or a copy of it);
    with `popen` keyword arguments, starts it and returns the Popen.

    `check`: a non-zero exit fails the test with the end of stderr. `KILL_AT_STEP` reaches the
    script only through `env` (`killed_at_step`), never from this process's environment.
    """
    command = [sys.executable, str(toolkit / script), *args]
    inherited = {name: value for name, value in os.environ.items() if name != KILL_AT_STEP}
    env = {**inherited, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if popen:
        return subprocess.Popen(command, env=env, cwd=str(toolkit), **popen)
    result = subprocess.run(command, env=env, cwd=str(toolkit), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def killed_at_step(step: int) -> dict[str, str]:
    """`env` of a run that kills itself (SIGKILL) right after its first checkpoint of a step >= `step`."""
    return {KILL_AT_STEP: str(step)}


def assert_killed(result: subprocess.CompletedProcess) -> None:
    """The run died of the SIGKILL of `killed_at_step` (it neither finished nor failed on its own)."""
    assert result.returncode == -signal.SIGKILL, f"exit status {result.returncode}:\n{result.stderr[-3000:]}"


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
