"""Serve export folders over HTTP in TensorFlow Serving's REST shape (FastAPI + uvicorn + ONNX Runtime).

    python serve.py --model_dir=teacher=outputs/teacher/export --model_dir=lstm=outputs/lstm_distil/export --port=8501
    curl -s localhost:8501/v1/models/teacher:predict -d '{"instances": ["a gorgeous , witty film"]}'

Endpoints, limits and micro-batching: see `bertdistill/serving/serving.py`. A model is version 1 unless
`--model_dir=NAME@VERSION=EXPORT_DIR` says otherwise (several versions of one name may be served;
a URL without a version means the highest). The address is taken first (a port in use or a bad
`--host` stops here), then every model is loaded and checked, then the server listens, on
127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found": not needed here

import errno  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from absl import flags  # noqa: E402

from bertdistill import errors  # noqa: E402
from bertdistill.cli import entry  # noqa: E402
from bertdistill.errors import FlagError  # noqa: E402
from bertdistill.cli.shared_flags import define_flag  # noqa: E402
from bertdistill.serving.predictor import Predictor  # noqa: E402
from bertdistill.serving.serving import DEFAULT_VERSION, MODEL_NAME_PATTERN, Limits, create_app  # noqa: E402

define_flag("model_dir", several="repeated", help="NAME=EXPORT_DIR or NAME@VERSION=EXPORT_DIR, once per model version "
                          f"(served at /v1/models/NAME[/versions/VERSION]; version {DEFAULT_VERSION} by default).")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8501, "Port (TensorFlow Serving's REST port by default).", lower_bound=0, upper_bound=65535)
define_flag("quantized", help="Serve the INT8 models (model.int8.onnx); --noquantized: the float32 ones "
            "(model.onnx); default: each export's recommended model (its INT8 gate; model.onnx without one).")
define_flag("threads", help="ONNX Runtime intra-op threads per model (0: all cores).")
flags.DEFINE_bool("micro_batching", True, "Run concurrent requests together (else one request at a time).")
define_flag("max_batch_size")
define_flag("batch_timeout_ms")
flags.DEFINE_integer("max_instances", 256, "Instances per request (more: 413).", lower_bound=1)
flags.DEFINE_integer("max_text_length", 10_000, "Characters per text (more: 413).", lower_bound=1)
flags.DEFINE_integer("max_body_bytes", 1 << 20, "Bytes per request body (more: 413).", lower_bound=1)
flags.DEFINE_integer("max_queued_instances", 10_000, "Instances waiting per model (more: 503).", lower_bound=1)
flags.DEFINE_bool("access_log", False, "Log every request (uvicorn's access log).")
FLAGS = flags.FLAGS

MODEL_SPEC = re.compile(rf"^(?P<name>{MODEL_NAME_PATTERN})(@(?P<version>[0-9]{{1,18}}))?$")


def parse_model_dirs(values: list[str] | None) -> dict[str, dict[int, str]]:
    """{name: {version: folder}} from NAME[@VERSION]=EXPORT_DIR values."""
    if not values:
        raise FlagError("model_dir", "--model_dir=NAME=EXPORT_DIR is required (repeat it for more models)")
    models: dict[str, dict[int, str]] = {}
    for value in values:
        spec, sep, folder = value.partition("=")
        if not sep or not folder:
            raise FlagError("model_dir", f"--model_dir={errors.shorten(value, 100)}: expected NAME=EXPORT_DIR or "
                                         "NAME@VERSION=EXPORT_DIR, e.g. --model_dir=teacher=outputs/teacher/export")
        match = MODEL_SPEC.match(spec)
        if not match:
            raise FlagError("model_dir", f"--model_dir: {errors.shorten(repr(spec), 60)} must be a model name (letters, "
                                         "digits, '_', '.', '-': it is part of the URL), optionally @VERSION (digits)")
        name, version = match["name"], int(match["version"] or DEFAULT_VERSION)
        if version in models.setdefault(name, {}):
            raise FlagError("model_dir", f"--model_dir: model {name!r} version {version} given twice")
        models[name][version] = folder
    return models


def bind(host: str, port: int) -> socket.socket:
    """A socket bound (not yet listening) to host:port; a bad host or a port in use is a `FlagError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise FlagError("host", f"--host={errors.shorten(host, 100)}: not an address of this machine ({e})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT can be reused
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        flag = "host" if e.errno == errno.EADDRNOTAVAIL else "port"
        raise FlagError(flag, f"cannot listen on --host={errors.shorten(host, 100)} --port={port}: {e.strerror}"
                              + ("; choose another --port or stop the server using it"
                                 if e.errno == errno.EADDRINUSE else "")) from None
    return sock


def main(argv):
    if len(argv) > 1:
        raise FlagError("model_dir", f"unexpected arguments {errors.shorten(argv[1:], 100)}: pass models as "
                                     "--model_dir=NAME=EXPORT_DIR")
    import uvicorn

    limits = Limits(max_batch_size=FLAGS.max_batch_size, batch_timeout_ms=FLAGS.batch_timeout_ms,
                    micro_batching=FLAGS.micro_batching, max_instances=FLAGS.max_instances,
                    max_text_length=FLAGS.max_text_length, max_body_bytes=FLAGS.max_body_bytes,
                    max_queued_instances=FLAGS.max_queued_instances)
    model_dirs = parse_model_dirs(FLAGS.model_dir)
    sock = bind(FLAGS.host, FLAGS.port)
    models: dict[str, dict[int, Predictor]] = {}
    for name, versions in model_dirs.items():
        for version, folder in versions.items():
            try:
                predictor = Predictor(folder, quantized=FLAGS.quantized, threads=FLAGS.threads,
                                      batch_size=FLAGS.max_batch_size)
            except errors.UserError as e:
                raise errors.UserError(f"--model_dir={name}@{version}=...: {e}") from None
            models.setdefault(name, {})[version] = predictor
            meta = predictor.metadata()
            sys.stderr.write(f"model {name} version {version}: {meta['model']} ({meta['precision']}, labels "
                             f"{meta['labels']}, max length {meta['max_seq_length']}) from {folder}\n")
    batching = (f"micro-batching up to {limits.max_batch_size} instances / {limits.batch_timeout_ms:g} ms"
                if limits.micro_batching else "no micro-batching")
    sys.stderr.write(f"serving {', '.join(models)} at http://{FLAGS.host}:{sock.getsockname()[1]}/v1/models/<name>"
                     f":predict ({batching})\n")
    sys.stderr.flush()
    config = uvicorn.Config(create_app(models, limits), log_level="warning", access_log=FLAGS.access_log,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])

if __name__ == "__main__":
    entry.run(main)
