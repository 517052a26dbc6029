"""Throughput and latency of serve.py: requests/s, sentences/s, p50/p99 latency at several client
concurrencies, float32 and INT8, micro-batching on and off, one SST-2 dev sentence per request.

    python benchmarks/serve_speed.py --exports=teacher=outputs/teacher/export --duration=10
    python benchmarks/serve_speed.py            # every outputs/*/export with an export_info.json

For each export, precision and batching mode one server is started (serve.py on 127.0.0.1, a free
port); for each concurrency C, C client threads, each with its own keep-alive HTTP connection, send
requests back to back for `--duration` seconds (after a warm-up). Client and server run on the
same machine and share its cores: the client's own work is counted against the server.
Prints a Markdown table (and writes JSON with `--output_json`).
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

from bertdistill.cli.shared_flags import define_flag
from bertdistill.export_format import EXPORT_INFO, MODEL, load_export_info
from bertdistill.files import atomic_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared")

flags.DEFINE_list("exports", None, "NAME=EXPORT_DIR of each model (default: every RUNS_DIR/*/export and "
                  "RUNS_DIR/*/*/export with an export_info.json).")
flags.DEFINE_string("runs_dir", "outputs", "Where to look for export folders when --exports is not given.")
flags.DEFINE_string("data_file", os.path.join(SHARED, "data", "sst2", "dev.tsv"), "SST-2 dev TSV (sentence column).")
flags.DEFINE_float("duration", 10.0, "Seconds measured per setting.")
flags.DEFINE_float("warmup", 1.0, "Seconds of requests before each measurement.")
flags.DEFINE_list("concurrency", ["1", "8", "32"], "Client concurrencies.")
flags.DEFINE_list("precisions", ["float32", "int8"], "float32 and/or int8.")
flags.DEFINE_list("batching", ["on", "off"], "Micro-batching on and/or off.")
flags.DEFINE_integer("server_threads", 0, "serve.py --threads (ONNX Runtime intra-op threads; 0: all cores).")
define_flag("max_batch_size", help="serve.py --max_batch_size.")
define_flag("batch_timeout_ms", help="serve.py --batch_timeout_ms.")
flags.DEFINE_string("python", sys.executable, "Python that runs serve.py.")
flags.DEFINE_string("output_json", None, "Also write the results here.")
flags.DEFINE_string("note", "", "A line printed above the table (e.g. what else ran on the machine).")
FLAGS = flags.FLAGS


def find_exports() -> dict[str, str]:
    found = {}
    for pattern in (f"*/export/{EXPORT_INFO}", f"*/*/export/{EXPORT_INFO}"):
        for info in sorted(glob.glob(os.path.join(FLAGS.runs_dir, pattern))):
            folder = os.path.dirname(info)
            name = os.path.relpath(os.path.dirname(folder), FLAGS.runs_dir).replace(os.sep, "_")
            found[name] = folder
    return found


def read_sentences(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        column = header.index("sentence")
        return [line.rstrip("\n").split("\t")[column] for line in f if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """serve.py in a subprocess, stopped on exit."""

    def __init__(self, name: str, folder: str, precision: str, batching: str):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        command = [FLAGS.python, os.path.join(REPO, "serve.py"), f"--model_dir={name}={folder}",
                   f"--port={self.port}", f"--threads={FLAGS.server_threads}",
                   f"--max_batch_size={FLAGS.max_batch_size}", f"--batch_timeout_ms={FLAGS.batch_timeout_ms}",
                   "--max_queued_instances=100000", f"--{'' if batching == 'on' else 'no'}micro_batching",
                   f"--{'' if precision == 'int8' else 'no'}quantized"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log, cwd=REPO)

    def __enter__(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"serve.py exited {self.process.returncode}: {self.log.read()[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("serve.py did not start within 120 s")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.log.close()
        os.unlink(self.log.name)


def load(port: int, name: str, sentences: list[str], concurrency: int, seconds: float) -> dict:
    """`concurrency` threads sending one sentence per request for `seconds`; latencies in ms."""
    path = f"/v1/models/{name}:predict"
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    counter = iter(range(10**12))
    lock = threading.Lock()

    def client(slot: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter)
            body = json.dumps({"instances": [sentences[i % len(sentences)]]})
            start = time.perf_counter()
            try:
                connection.request("POST", path, body, headers)
                answer = connection.getresponse()
                answer.read()
                ok = answer.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if ok:
                latencies[slot].append((time.perf_counter() - start) * 1000)
            else:
                errors[slot] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(slot,), daemon=True) for slot in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    elapsed = time.monotonic() - began
    done = np.array([x for slot in latencies for x in slot])
    return {"requests": int(done.size), "errors": int(sum(errors)), "seconds": elapsed,
            "requests_per_s": done.size / elapsed, "sentences_per_s": done.size / elapsed,
            "p50_ms": float(np.percentile(done, 50)) if done.size else float("nan"),
            "p99_ms": float(np.percentile(done, 99)) if done.size else float("nan")}


def main(argv):
    del argv
    exports = dict(item.split("=", 1) for item in FLAGS.exports) if FLAGS.exports else find_exports()
    if not exports:
        raise app.UsageError("no export folders: pass --exports=NAME=EXPORT_DIR")
    sentences = read_sentences(FLAGS.data_file)
    results = []
    for name, folder in exports.items():
        kind = load_export_info(folder).get(MODEL)
        for precision in FLAGS.precisions:
            for batching in FLAGS.batching:
                with Server(name, folder, precision, batching) as server:
                    for concurrency in map(int, FLAGS.concurrency):
                        load(server.port, name, sentences, concurrency, FLAGS.warmup)
                        result = {"model": name, "kind": kind, "precision": precision, "batching": batching,
                                  "concurrency": concurrency,
                                  **load(server.port, name, sentences, concurrency, FLAGS.duration)}
                        results.append(result)
                        print(json.dumps(result), file=sys.stderr, flush=True)
    cores = os.cpu_count()
    print(f"\nserve.py on 127.0.0.1, client on the same {cores}-core machine (sharing its cores); one SST-2 dev "
          f"sentence per request; {FLAGS.duration:g} s per setting after {FLAGS.warmup:g} s warm-up; server "
          f"--threads={FLAGS.server_threads} --max_batch_size={FLAGS.max_batch_size} "
          f"--batch_timeout_ms={FLAGS.batch_timeout_ms:g}." + (f" {FLAGS.note}" if FLAGS.note else ""))
    print("\n| model | precision | micro-batching | concurrency | requests/s | sentences/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} ({r['kind']}) | {r['precision']} | {r['batching']} | {r['concurrency']} | "
              f"{r['requests_per_s']:.1f} | {r['sentences_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['errors']} |")
    if FLAGS.output_json:
        with atomic_output(FLAGS.output_json) as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
