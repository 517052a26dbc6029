"""Runs a chain of stages in one output folder, each skipped when complete and resumed when
interrupted.

A stage is a command (one of the toolkit's scripts, in a fresh interpreter) or a function. When
it succeeds, `<output_dir>/pipeline/<stage>.json` records its command and wall time: the next
run skips it (a stage that reads every earlier one, the report, runs again when one of those
runs or finished after it). A killed stage has no record, so the next run starts the same
command again and the script resumes from its own checkpoints (its run manifest guarantees it
is the same run).
A record made with a different command is refused, naming what differs; a folder moved since
reads its records' paths in the new place (`bertdistill.relocation`). `check_stages` runs
every stage's own flag checks before the first stage starts. Script stages die with
the pipeline (Linux `PR_SET_PDEATHSIG`), so a `kill -9` of the pipeline leaves no orphan
writing into the folder.
"""

from __future__ import annotations

import ctypes
import dataclasses
import difflib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from absl import logging

from bertdistill import relocation
from bertdistill.errors import UserError, detail, field, is_user_error, shorten
from bertdistill.files import atomic_output

RECORDS = "pipeline"
LOGS = "logs"
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class Stage:
    """`name`, and either `command` (argv after the interpreter) or `function` (no arguments).
    `nominal_minutes` is the expected wall time, used only for the ETA."""
    name: str
    command: Sequence[str] | None = None
    function: Callable[[], None] | None = None
    nominal_minutes: float = 1.0
    description: str = ""
    key: Sequence[str] | None = None  # what the record must match (default: the command)
    check: Callable[[], None] | None = None  # the stage's own checks of its flags, run before any stage
    # Made again when an earlier stage runs or finished after it (the report, which reads them all).
    follows_earlier: bool = False
    reads: Sequence[str] = ()  # the stages whose outputs it reads

    @property
    def signature(self) -> list[str]:
        return list(self.key if self.key is not None else self.command or [])


def check_stages(stages: Sequence[Stage]) -> None:
    """Runs every stage's `check` before any stage starts; a user error becomes one `UserError`
    naming the stage (with a generic hint unless the error gives its own)."""
    for stage in stages:
        if stage.check is None:
            continue
        try:
            stage.check()
        except Exception as e:  # noqa: BLE001 - re-raised as is unless a user error
            if not is_user_error(e):
                raise
            generic = f"fix it ({field('stage_flag')} or the pipeline's flags) before any stage runs"
            raise UserError(f"stage {stage.name}: {detail(e)}",
                            hint=None if getattr(e, "hint", None) else generic) from None


def record_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, RECORDS, f"{name}.json")


def read_record(output_dir: str, name: str) -> dict | None:
    path = record_path(output_dir, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _difference(old: Sequence[str], new: Sequence[str]) -> str:
    """The differences between two different commands, in words ("; " between them)."""
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        then, now = shorten(" ".join(old[i1:i2]), 100), shorten(" ".join(new[j1:j2]), 100)
        changes.append({"replace": f"{then} then, {now} now", "insert": f"{now} added", "delete": f"{then} dropped"}[tag])
    return shorten("; ".join(changes), 300)


def _same_command(recorded: Sequence[str], signature: Sequence[str], roots: relocation.Roots | None = None) -> bool:
    """Whether a record was made by `signature`, its paths moved by `roots` (the output folder
    moved since). A script stage's signature names its script relative to the toolkit (the
    checkout may move); records made before that name it by an absolute path, which matches when
    it ends with the relative one."""
    recorded, signature = list(recorded), list(signature)
    if not recorded or not signature:
        return recorded == signature
    same_arguments = len(recorded) == len(signature) and all(
        relocation.same_setting(old, new, roots) for old, new in zip(recorded[1:], signature[1:]))
    return same_arguments and (relocation.same_setting(recorded[0], signature[0], roots) or (
        os.path.isabs(recorded[0]) and recorded[0].endswith(os.sep + signature[0])))


def check_records(output_dir: str, stages: Sequence[Stage]) -> None:
    """Refuses, before any work, a folder whose completed stages were made differently."""
    for stage in stages:
        record = read_record(output_dir, stage.name)
        if record is None:
            continue
        roots = relocation.moved_roots(record.get("output_dir"), output_dir)
        if not _same_command(record["command"], stage.signature, roots):
            raise UserError(f"{output_dir}: stage {stage.name} was completed with other settings "
                            f"({_difference(relocation.relocate(record['command'], roots), stage.signature)})",
                            hint=f"use another {field('output_dir')}, or {field('overwrite_output_dir')} to "
                                 "start over")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the child may outlive a killed pipeline
        pass


def run_command(command: Sequence[str], log_path: str) -> int:
    """Runs `python command...`, copying its output (stdout and stderr) to ours and to `log_path`."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, "PYTHONUNBUFFERED": "1"}  # TF's C++ banner lines: off
    with open(log_path, "a", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env, preexec_fn=_die_with_parent)
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
        return process.wait()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Runner:
    """Runs `stages` in order in `output_dir` (see the module docstring)."""

    def __init__(self, output_dir: str, stages: Sequence[Stage]):
        self.output_dir = output_dir
        self.stages = list(stages)
        self.started = time.time()
        self.done_nominal = 0.0  # nominal minutes of the stages run (not skipped) so far
        self.to_run = self.stages_to_run()

    def stages_to_run(self) -> list[str]:
        """The stages without a record, and each `follows_earlier` stage after one of those or
        after a stage that finished later than it did."""
        to_run, newest = [], ""
        for stage in self.stages:
            record = read_record(self.output_dir, stage.name)
            if record is None or (stage.follows_earlier and (to_run or newest > record["finished"])):
                to_run.append(stage.name)
            else:
                newest = max(newest, record["finished"])
        return to_run

    def eta(self, index: int) -> str:
        """The nominal minutes of the stages left to run (completed ones are skipped), scaled by
        how fast this machine ran the stages done so far once they make up a tenth of the nominal
        total."""
        to_run = [stage for stage in self.stages if stage.name in self.to_run]
        remaining = sum(stage.nominal_minutes for stage in to_run if self.stages.index(stage) >= index)
        if self.done_nominal >= 0.1 * sum(stage.nominal_minutes for stage in to_run):
            return _clock(remaining * (time.time() - self.started) / self.done_nominal)
        return f"~{_clock(remaining * 60)} (nominal)"

    def run(self) -> dict[str, dict]:
        """Runs (or skips) every stage; returns each stage's record."""
        check_records(self.output_dir, self.stages)
        records = {}
        total = len(self.stages)
        for index, stage in enumerate(self.stages):
            header = f"stage {index + 1}/{total} {stage.name}"
            record = read_record(self.output_dir, stage.name)
            if stage.name not in self.to_run:
                print(f"[pipeline] {header}: complete, skipped ({_clock(record['seconds'])} when it ran)", flush=True)
                records[stage.name] = record
                continue
            if record is not None:
                print(f"[pipeline] {header}: made again (an earlier stage is newer)", flush=True)
            print(f"[pipeline] {header}: start{f' ({stage.description})' if stage.description else ''}; elapsed "
                  f"{_clock(time.time() - self.started)}, ETA {self.eta(index)}", flush=True)
            start = time.time()
            if stage.command is not None:
                log_path = os.path.join(self.output_dir, LOGS, f"{stage.name}.log")
                logging.info("%s: %s", stage.name, " ".join(stage.command))
                status = run_command(stage.command, log_path)
                if status:
                    raise UserError(f"stage {stage.name} failed (exit status {status}); its log: {log_path}",
                                    hint="fix the cause and run the same command again: completed stages are "
                                         "skipped and this one resumes")
            else:
                stage.function()
            seconds = time.time() - start
            self.done_nominal += stage.nominal_minutes
            record = {"command": stage.signature, "output_dir": os.path.abspath(self.output_dir), "seconds": seconds,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.makedirs(os.path.dirname(record_path(self.output_dir, stage.name)), exist_ok=True)
            with atomic_output(record_path(self.output_dir, stage.name)) as f:
                json.dump(record, f, indent=2)
            records[stage.name] = record
            print(f"[pipeline] {header}: done in {_clock(seconds)}; elapsed {_clock(time.time() - self.started)}",
                  flush=True)
        return records
