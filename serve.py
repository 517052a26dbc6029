"""Serve export folders over HTTP in TensorFlow Serving's REST shape (FastAPI + uvicorn + ONNX Runtime).

    python serve.py --model_dir=teacher=outputs/teacher/export --model_dir=lstm=outputs/lstm_distil/export --port=8501
    curl -s localhost:8501/v1/models/teacher:predict -d '{"instances": ["a gorgeous , witty film"]}'

Endpoints, limits and micro-batching: see `bertdistill/serving.py`. Every model is loaded (and
checked) before the server starts listening; it listens on 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found": not needed here

import re  # noqa: E402
import sys  # noqa: E402

from absl import flags  # noqa: E402

from bertdistill import errors  # noqa: E402
from bertdistill.errors import FlagError  # noqa: E402
from bertdistill.predictor import Predictor  # noqa: E402
from bertdistill.serving import Limits, create_app  # noqa: E402

flags.DEFINE_multi_string("model_dir", None, "NAME=EXPORT_DIR, once per model (served at /v1/models/NAME).")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8501, "Port (TensorFlow Serving's REST port by default).", lower_bound=0, upper_bound=65535)
flags.DEFINE_bool("quantized", None, "Serve the INT8 models (model.int8.onnx); --noquantized: the float32 ones "
                  "(model.onnx); default: each export's recommended model (its INT8 gate; model.onnx without one).")
flags.DEFINE_integer("threads", 0, "ONNX Runtime intra-op threads per model (0: all cores).", lower_bound=0)
flags.DEFINE_bool("micro_batching", True, "Run concurrent requests together (else one request at a time).")
flags.DEFINE_integer("max_batch_size", 32, "Instances per batched model call (also the predictor's batch size).",
                     lower_bound=1)
flags.DEFINE_float("batch_timeout_ms", 2.0, "How long a batch waits for more requests after its first.",
                   lower_bound=0)
flags.DEFINE_integer("max_instances", 256, "Instances per request (more: 413).", lower_bound=1)
flags.DEFINE_integer("max_text_length", 10_000, "Characters per text (more: 413).", lower_bound=1)
flags.DEFINE_integer("max_body_bytes", 1 << 20, "Bytes per request body (more: 413).", lower_bound=1)
flags.DEFINE_integer("max_queued_instances", 10_000, "Instances waiting per model (more: 503).", lower_bound=1)
flags.DEFINE_bool("access_log", False, "Log every request (uvicorn's access log).")
FLAGS = flags.FLAGS

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_model_dirs(values: list[str] | None) -> dict[str, str]:
    """{name: folder} from NAME=EXPORT_DIR values."""
    if not values:
        raise FlagError("model_dir", "--model_dir=NAME=EXPORT_DIR is required (repeat it for more models)")
    models = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not folder:
            raise FlagError("model_dir", f"--model_dir={errors.shorten(value, 100)}: expected NAME=EXPORT_DIR, "
                                         "e.g. --model_dir=teacher=outputs/teacher/export")
        if not NAME.match(name):
            raise FlagError("model_dir", f"--model_dir: model name {errors.shorten(repr(name), 60)} must be letters, "
                                         "digits, '_', '.', '-' (it is part of the URL)")
        if name in models:
            raise FlagError("model_dir", f"--model_dir: model name {name!r} given twice")
        models[name] = folder
    return models


def main(argv):
    if len(argv) > 1:
        raise FlagError("model_dir", f"unexpected arguments {errors.shorten(argv[1:], 100)}: pass models as "
                                     "--model_dir=NAME=EXPORT_DIR")
    import uvicorn

    limits = Limits(max_batch_size=FLAGS.max_batch_size, batch_timeout_ms=FLAGS.batch_timeout_ms,
                    micro_batching=FLAGS.micro_batching, max_instances=FLAGS.max_instances,
                    max_text_length=FLAGS.max_text_length, max_body_bytes=FLAGS.max_body_bytes,
                    max_queued_instances=FLAGS.max_queued_instances)
    predictors = {}
    for name, folder in parse_model_dirs(FLAGS.model_dir).items():
        try:
            predictors[name] = Predictor(folder, quantized=FLAGS.quantized, threads=FLAGS.threads,
                                         batch_size=FLAGS.max_batch_size)
        except errors.UserError as e:
            raise errors.UserError(f"--model_dir={name}=...: {e}") from None
        meta = predictors[name].metadata()
        sys.stderr.write(f"model {name}: {meta['model']} ({meta['precision']}, labels {meta['labels']}, max length "
                         f"{meta['max_seq_length']}) from {folder}\n")
    batching = (f"micro-batching up to {limits.max_batch_size} instances / {limits.batch_timeout_ms:g} ms"
                if limits.micro_batching else "no micro-batching")
    sys.stderr.write(f"serving {', '.join(predictors)} at http://{FLAGS.host}:{FLAGS.port}/v1/models/<name>:predict "
                     f"({batching})\n")
    sys.stderr.flush()
    uvicorn.run(create_app(predictors, limits), host=FLAGS.host, port=FLAGS.port, log_level="warning",
                access_log=FLAGS.access_log, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    errors.run(main)
