"""TensorFlow Serving's view of a SavedModel: the TF1 session-based loader
(`tf.compat.v1.saved_model.loader.load`, what `tensorflow_model_server` and `saved_model_cli run`
use) in a fresh interpreter, so nothing the test process built can stand in for the files."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

LOADER = """
import sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401 - the string signature's ops, which tensorflow_model_server links in

folder, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    job = np.load(f"{folder}/job{i}.npz")
    path, signature_name = str(job["saved_model"]), str(job["signature"])
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], path).signature_def[signature_name]
        feed = {signature.inputs[name].name: job[name] for name in signature.inputs}
        outputs = session.run({name: tensor.name for name, tensor in signature.outputs.items()}, feed)
    # String outputs come back as object arrays of bytes: saved as bytes, so loading needs no pickle.
    outputs = {name: value.astype(bytes) if value.dtype == object else value for name, value in outputs.items()}
    np.savez(f"{folder}/out{i}.npz", **outputs)
"""


def run_signatures(jobs: list[tuple[str, str, dict[str, np.ndarray]]], work_dir) -> list[dict[str, np.ndarray]]:
    """The outputs of each (saved_model folder, signature name, inputs), all in one fresh process.
    String inputs and outputs are bytes arrays (UTF-8; numpy drops trailing NUL characters)."""
    for i, (path, signature, inputs) in enumerate(jobs):
        np.savez(os.path.join(work_dir, f"job{i}.npz"), saved_model=path, signature=signature, **inputs)
    result = subprocess.run([sys.executable, "-c", LOADER, str(work_dir), str(len(jobs))], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = []
    for i in range(len(jobs)):
        with np.load(os.path.join(work_dir, f"out{i}.npz")) as out:
            outputs.append(dict(out))
    return outputs
