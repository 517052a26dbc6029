"""An HTTP server over export folders that speaks TensorFlow Serving's REST predict API
(FastAPI + uvicorn; no TensorFlow).

    POST /v1/models/NAME[/versions/N]:predict
         row format       {"instances": ["text", ...]}  or  {"instances": [{"text": "..."}, ...]}
                          -> {"predictions": [{"label": "1", "probability": 0.98, "probabilities": [0.02, 0.98]}, ...]}
         columnar format  {"inputs": ["text", ...]}  or  {"inputs": {"text": ["...", ...]}}
                          -> {"outputs": {"label": [...], "probability": [...], "probabilities": [[...], ...]}}
    GET  /v1/models/NAME[/versions/N]            -> {"model_version_status": [{"version": "1", "state": "AVAILABLE", ...}]}
    GET  /v1/models/NAME[/versions/N]/metadata   -> {"model_spec": {...}, "metadata": {"signature_def": {...}, ...}}
    GET  /healthz                                -> {"status": "ok", "models": {...}}

A model that reads sentence pairs (its export_info's `text_inputs`) takes two named inputs, `text`
and `text_b`: rows `{"instances": [{"text": "...", "text_b": "..."}, ...]}`, or columns
`{"inputs": {"text": [...], "text_b": [...]}}`; a bare string is refused (400) for it, as a
`text_b` is for a single-text model.

The signature `serving_default` takes the model's named string inputs and returns the
tensors `label` (string), `probability` (float) and `probabilities` (float [num_labels], in the
order of the metadata's `labels`). Without a version the URL means the model's highest version.

Errors answer `{"error": "..."}` (TF Serving's shape): 400 for malformed JSON (also invalid
Unicode, or nesting deeper than the parser allows) or a request of the wrong shape, 413 when a
limit is exceeded (body bytes, instances per request, characters per text), 404 for an unknown
model, version or path, 405 for a wrong method, 503 when the model's queue is full, 500 for a bug
(the server keeps running).

Each request is validated and encoded (tokenized) on its own; only then do its token rows join
the model's queue, so a bad request fails alone. Dynamic micro-batching: each model version has an
asyncio queue of requests and one worker task. The worker takes the first waiting request, then
keeps taking requests until `max_batch_size` instances are gathered or `batch_timeout_ms` have
passed since the first, runs them as one call of the predictor (length-sorted batches) in the
model's own thread (so the event loop keeps accepting requests while ONNX Runtime works) and
answers each request with its slice. Without micro-batching the worker runs each request on its
own, in arrival order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException

from bertdistill.errors import UserError
from bertdistill.serving.predictor import Predictor

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # no ':' or '/': "NAME:predict" is not a model name
DEFAULT_VERSION = 1
SIGNATURE_NAME = "serving_default"
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}


class _ModelName(Convertor):
    regex = MODEL_NAME_PATTERN

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model", _ModelName())


@dataclasses.dataclass(frozen=True)
class Limits:
    """Request limits and batching settings of a server."""

    max_batch_size: int = 32
    batch_timeout_ms: float = 2.0
    micro_batching: bool = True
    max_instances: int = 256
    max_text_length: int = 10_000  # characters
    max_body_bytes: int = 1 << 20
    max_queued_instances: int = 10_000


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class _Job:
    rows: list[list[int]]
    future: asyncio.Future


class ModelWorker:
    """One model version's request queue, batching worker and inference thread."""

    def __init__(self, name: str, predictor: Predictor, limits: Limits):
        # the signature's named inputs, in `Predictor.encode`'s argument order
        self.name, self.predictor, self.limits, self.inputs = name, predictor, limits, predictor.text_inputs
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"onnx-{name}")
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task | None = None
        self.queued_instances = 0
        self.stats = {"requests": 0, "instances": 0, "batches": 0}

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def encode(self, columns: dict[str, list[str]]) -> list[list[int]]:
        """The token rows of one request's validated inputs, encoded outside the event loop."""
        try:
            return await asyncio.to_thread(self.predictor.encode, *(columns[name] for name in self.inputs))
        except UserError as e:
            raise ApiError(400, str(e)) from None

    async def predict(self, rows: list[list[int]]) -> np.ndarray:
        """The probabilities [len(rows), num_labels] of encoded `rows`, computed with whatever other requests are waiting."""
        if self.queued_instances + len(rows) > self.limits.max_queued_instances:
            raise ApiError(503, f"model {self.name} has {self.queued_instances} instances queued "
                                f"(limit {self.limits.max_queued_instances}); retry later")
        future = asyncio.get_running_loop().create_future()
        self.queued_instances += len(rows)
        await self.queue.put(_Job(rows, future))
        return await future

    async def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """`first` and the requests that join it; the request that would overflow the batch is returned apart."""
        jobs, count = [first], len(first.rows)
        if not self.limits.micro_batching:
            return jobs, None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.batch_timeout_ms / 1000
        while count < self.limits.max_batch_size:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):  # a cancelled get leaves the item in the queue
                        job = await self.queue.get()
                except TimeoutError:
                    break
            if count + len(job.rows) > self.limits.max_batch_size:
                return jobs, job
            jobs.append(job)
            count += len(job.rows)
        return jobs, None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        held = None
        while True:
            first, held = (held, None) if held else (await self.queue.get(), None)
            jobs, held = await self._gather(first)
            rows = [row for job in jobs for row in job.rows]
            try:
                result = await loop.run_in_executor(self.executor, self.predictor.run_rows, rows)
            except Exception as error:  # noqa: BLE001 - answered as a 500, the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                start = 0
                for job in jobs:
                    if not job.future.done():  # a client that went away has a cancelled future
                        job.future.set_result(result["probabilities"][start:start + len(job.rows)])
                    start += len(job.rows)
            finally:
                self.queued_instances -= len(rows)
            self.stats["requests"] += len(jobs)
            self.stats["instances"] += len(rows)
            self.stats["batches"] += 1


def _json_type(value: object) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _example(inputs: Sequence[str]) -> str:
    return "{" + ", ".join(f'"{name}": string' for name in inputs) + "}"


def _named(value: object, inputs: Sequence[str], where: str) -> dict[str, object]:
    """{input name: value} of `value`: an object keyed by exactly `inputs`, or the bare value of a lone input."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(inputs))
        missing = [name for name in inputs if name not in value]
        if unknown or missing:
            wrong = f"has unknown inputs {unknown[:5]}" if unknown else f"lacks {missing}"
            raise ApiError(400, f"{where} {wrong}: the inputs are {list(inputs)}, e.g. {_example(inputs)}")
        return value
    if len(inputs) == 1:
        return {inputs[0]: value}
    raise ApiError(400, f"{where} must be an object {_example(inputs)}, got {_json_type(value)}")


def _text(value: object, where: str, limits: Limits) -> str:
    """`value` if it is a valid text within the length limit, else an `ApiError`."""
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be a string, got {_json_type(value)}")
    if len(value) > limits.max_text_length:
        raise ApiError(413, f"{where} has {len(value)} characters; the limit is {limits.max_text_length}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"{where} is not valid Unicode: a lone surrogate \\u{ord(value[e.start]):04x} at "
                            f"character {e.start}") from None
    return value


def _count(count: int, limits: Limits) -> None:
    if count > limits.max_instances:
        raise ApiError(413, f"{count} instances in one request; the limit is {limits.max_instances}")


def _row_cells(instances: object, inputs: Sequence[str], limits: Limits) -> dict[str, list[tuple[str, object]]]:
    """{input name: [(where, value)]} of the row format's `instances`."""
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, f'"instances" must be a non-empty array of strings or objects {_example(inputs)}, '
                            f"got {_json_type(instances)}")
    _count(len(instances), limits)
    cells = {name: [] for name in inputs}
    for i, instance in enumerate(instances):
        given = _named(instance, inputs, f"instances[{i}]")
        for name in inputs:
            cells[name].append((f"instances[{i}]" + (f".{name}" if isinstance(instance, dict) else ""), given[name]))
    return cells


def _column_cells(value: object, inputs: Sequence[str], limits: Limits) -> dict[str, list[tuple[str, object]]]:
    """{input name: [(where, value)]} of the columnar format's `inputs`."""
    given = _named(value, inputs, '"inputs"')
    cells = {}
    for name in inputs:
        where = '"inputs"' + (f".{name}" if isinstance(value, dict) else "")
        column = given[name]
        if not isinstance(column, list) or not column:
            raise ApiError(400, f"{where} must be a non-empty array of strings, got {_json_type(column)}")
        _count(len(column), limits)
        cells[name] = [(f"{where}[{i}]", text) for i, text in enumerate(column)]
    lengths = [len(column) for column in cells.values()]
    if len(set(lengths)) > 1:
        raise ApiError(400, f'the named "inputs" {list(inputs)} have different lengths {lengths}')
    return cells


def parse_request(payload: object, inputs: Sequence[str], limits: Limits) -> tuple[bool, dict[str, list[str]]]:
    """(columnar, {input name: texts}) of a predict request body (decoded JSON) in TF Serving's row
    (`instances`) or columnar (`inputs`) format; an `ApiError` for anything else."""
    if not isinstance(payload, dict):
        raise ApiError(400, 'the request body must be a JSON object: {"instances": ["text", ...]}')
    signature = payload.get("signature_name", SIGNATURE_NAME)
    if signature != SIGNATURE_NAME:
        raise ApiError(400, f"unknown signature_name {str(signature)[:100]!r}: the only one is {SIGNATURE_NAME!r}")
    unknown = sorted(set(payload) - {"instances", "inputs", "signature_name"})
    if unknown:
        raise ApiError(400, f"unknown keys {unknown[:5]}: a predict request has \"instances\" (row format) or "
                            "\"inputs\" (columnar format), and optionally \"signature_name\"")
    columnar = "inputs" in payload
    if columnar == ("instances" in payload):
        raise ApiError(400, 'a predict request has either "instances" (row format) or "inputs" (columnar format)'
                            + (", not both" if columnar else ""))
    cells = (_column_cells(payload["inputs"], inputs, limits) if columnar
             else _row_cells(payload["instances"], inputs, limits))
    return columnar, {name: [_text(value, where, limits) for where, value in column] for name, column in cells.items()}


def format_outputs(probabilities: np.ndarray, labels: Sequence[str], columnar: bool) -> dict:
    """The answer to a predict request: `predictions` (row format) or `outputs` (columnar), as TF Serving gives them."""
    top = probabilities.argmax(axis=1)
    outputs = {"label": [labels[i] for i in top],
               "probability": [float(row[i]) for row, i in zip(probabilities, top)],
               "probabilities": probabilities.tolist()}
    if columnar:
        return {"outputs": outputs}
    return {"predictions": [dict(zip(outputs, values)) for values in zip(*outputs.values())]}


def _tensor_info(name: str, dtype: str, dims: Sequence[int]) -> dict:
    return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in dims],
                                             "unknown_rank": False}, "name": f"{name}:0"}


def signature_def(inputs: Sequence[str], num_labels: int) -> dict:
    """The predict signature in the JSON of TF Serving's GetModelMetadata (`SignatureDef`)."""
    return {"inputs": {name: _tensor_info(name, "DT_STRING", [-1]) for name in inputs},
            "outputs": {"label": _tensor_info("label", "DT_STRING", [-1]),
                        "probability": _tensor_info("probability", "DT_FLOAT", [-1]),
                        "probabilities": _tensor_info("probabilities", "DT_FLOAT", [-1, num_labels])},
            "method_name": "tensorflow/serving/predict"}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 `ApiError` as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> object:
    """The decoded request body; malformed JSON, invalid UTF-8 or too deep nesting is a 400 `ApiError`."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "the JSON in the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"malformed JSON in the request body: {str(e)[:200]}") from None


def create_app(models: dict[str, dict[int, Predictor]], limits: Limits = Limits()) -> FastAPI:
    """A FastAPI application serving `models`: {name: {version: predictor}}."""
    workers = {name: {version: ModelWorker(f"{name}-{version}", predictor, limits)
                      for version, predictor in versions.items()} for name, versions in models.items()}
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        for versions in workers.values():
            for worker in versions.values():
                worker.start()
        yield
        for versions in workers.values():
            for worker in versions.values():
                await worker.stop()

    app = FastAPI(title="bertdistill serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workers = workers

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        # json.dumps escapes non-ASCII: a message quoting a lone surrogate still encodes
        return Response(json.dumps({"error": message}), status_code=status, headers=headers,
                        media_type="application/json")

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        messages = {404: f"no such path: {request.method} {request.url.path}",
                    405: f"method {request.method} not allowed on {request.url.path}"}
        return error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)  # 405: Allow

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {str(exc)[:300]}")

    def version_of(request: Request) -> tuple[str, int | None]:
        name, version = request.path_params["name"], request.path_params.get("version")
        if name not in workers:
            raise ApiError(404, f"Servable not found for request: Latest({name}); models: {sorted(workers)}")
        if version is not None and version not in workers[name]:
            raise ApiError(404, f"Servable not found for request: Specific({name}, {version}); versions: "
                                f"{sorted(workers[name])}")
        return name, version

    def worker_of(request: Request) -> tuple[int, ModelWorker]:
        name, version = version_of(request)
        version = max(workers[name]) if version is None else version
        return version, workers[name][version]

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": {name: sorted(versions) for name, versions in sorted(workers.items())},
                "uptime_s": round(time.time() - started, 1)}

    @app.post("/v1/models/{name:model}:predict")
    @app.post("/v1/models/{name:model}/versions/{version:int}:predict")
    async def predict(request: Request):
        _, worker = worker_of(request)
        columnar, columns = parse_request(parse_json(await read_body(request, limits.max_body_bytes)),
                                          worker.inputs, limits)
        probabilities = await worker.predict(await worker.encode(columns))
        return format_outputs(probabilities, worker.predictor.labels, columnar)

    @app.get("/v1/models/{name:model}")
    @app.get("/v1/models/{name:model}/versions/{version:int}")
    async def status(request: Request):
        name, version = version_of(request)
        return {"model_version_status": [{"version": str(v), "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}
                                         for v in sorted(workers[name]) if version in (None, v)]}

    @app.get("/v1/models/{name:model}/metadata")
    @app.get("/v1/models/{name:model}/versions/{version:int}/metadata")
    async def metadata(request: Request):
        version, worker = worker_of(request)
        predictor = worker.predictor
        # the ONNX graph's "inputs" and "outputs" are not this endpoint's: the signature_def lists those
        export = {key: value for key, value in predictor.metadata().items() if key not in ("inputs", "outputs")}
        return {"model_spec": {"name": request.path_params["name"], "signature_name": SIGNATURE_NAME,
                               "version": str(version)},
                "metadata": {"signature_def": {"signature_def": {
                                 SIGNATURE_NAME: signature_def(worker.inputs, len(predictor.labels))}},
                             "export": export, "limits": dataclasses.asdict(limits), "stats": dict(worker.stats)}}

    return app
