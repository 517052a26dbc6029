"""An HTTP server over export folders, in TensorFlow Serving's REST shape (FastAPI + uvicorn; no TensorFlow).

    POST /v1/models/<name>:predict    {"instances": ["text", ...]}  or  {"instances": [{"text": "..."}, ...]}
                                      -> {"predictions": [{"label": "1", "probability": 0.98,
                                                           "probabilities": {"0": 0.02, "1": 0.98}}, ...]}
    GET  /v1/models/<name>            -> {"model_version_status": [{"version": "1", "state": "AVAILABLE", ...}]}
    GET  /v1/models/<name>/metadata   -> {"model_spec": {...}, "metadata": {labels, inputs, max length, kind, precision}}
    GET  /healthz                     -> {"status": "ok", "models": [...]}

Errors answer `{"error": "..."}` (TF Serving's shape): 400 for malformed JSON or a request of the
wrong shape, 413 when a limit is exceeded (body bytes, instances per request, characters per
text), 404 for an unknown model or path, 503 when the model's queue is full, 500 for a bug
(the server keeps running).

Dynamic micro-batching: each model has an asyncio queue of requests and one worker task. The
worker takes the first waiting request, then keeps taking requests until `max_batch_size`
instances are gathered or `batch_timeout_ms` have passed since the first, runs them as one
call of the predictor (length-sorted batches) in the model's own thread (so the event loop keeps
accepting requests while ONNX Runtime works) and answers each request with its slice. Without
micro-batching the worker runs each request on its own, in arrival order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bertdistill.predictor import Predictor

MODEL_VERSION = "1"
SIGNATURE_NAME = "serving_default"


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
    texts: list[str]
    future: asyncio.Future


class ModelWorker:
    """One model's request queue, batching worker and inference thread."""

    def __init__(self, name: str, predictor: Predictor, limits: Limits):
        self.name, self.predictor, self.limits = name, predictor, limits
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

    async def predict(self, texts: list[str]) -> list[dict]:
        """The predictions of `texts`, computed with whatever other requests are waiting."""
        if self.queued_instances + len(texts) > self.limits.max_queued_instances:
            raise ApiError(503, f"model {self.name} has {self.queued_instances} instances queued "
                                f"(limit {self.limits.max_queued_instances}); retry later")
        future = asyncio.get_running_loop().create_future()
        self.queued_instances += len(texts)
        await self.queue.put(_Job(texts, future))
        return await future

    async def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """`first` and the requests that join it; the request that would overflow the batch is returned apart."""
        jobs, count = [first], len(first.texts)
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
            if count + len(job.texts) > self.limits.max_batch_size:
                return jobs, job
            jobs.append(job)
            count += len(job.texts)
        return jobs, None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        held = None
        while True:
            first, held = (held, None) if held else (await self.queue.get(), None)
            jobs, held = await self._gather(first)
            texts = [text for job in jobs for text in job.texts]
            try:
                probabilities = await loop.run_in_executor(self.executor, self.predictor.probabilities, texts)
                predictions = [p.to_dict() for p in self.predictor.to_predictions(probabilities)]
            except Exception as error:  # noqa: BLE001 - answered as a 500, the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                start = 0
                for job in jobs:
                    if not job.future.done():  # a client that went away has a cancelled future
                        job.future.set_result(predictions[start:start + len(job.texts)])
                    start += len(job.texts)
            finally:
                self.queued_instances -= len(texts)
            self.stats["requests"] += len(jobs)
            self.stats["instances"] += len(texts)
            self.stats["batches"] += 1


def parse_instances(payload: object, limits: Limits) -> list[str]:
    """The texts of a predict request body (already decoded JSON); an `ApiError` for anything else."""
    if not isinstance(payload, dict):
        raise ApiError(400, 'the request body must be a JSON object: {"instances": ["text", ...]}')
    signature = payload.get("signature_name", SIGNATURE_NAME)
    if signature != SIGNATURE_NAME:
        raise ApiError(400, f"unknown signature_name {str(signature)[:100]!r}: the only one is {SIGNATURE_NAME!r}")
    unknown = sorted(set(payload) - {"instances", "signature_name"})
    if "instances" not in payload:
        extra = f" (got keys {unknown[:5]})" if unknown else ""
        raise ApiError(400, f'missing "instances": send {{"instances": ["text", ...]}}{extra}')
    if unknown:
        raise ApiError(400, f"unknown keys {unknown[:5]}: a predict request has \"instances\" (and optionally "
                            "\"signature_name\")")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, '"instances" must be a non-empty list of texts (strings or {"text": string})')
    if len(instances) > limits.max_instances:
        raise ApiError(413, f"{len(instances)} instances in one request; the limit is {limits.max_instances}")
    texts = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == {"text"}:
            instance = instance["text"]
        if not isinstance(instance, str):
            raise ApiError(400, f'instances[{i}] must be a string or {{"text": string}}, got '
                                f"{json.dumps(instance)[:100]}")
        if len(instance) > limits.max_text_length:
            raise ApiError(413, f"instances[{i}] has {len(instance)} characters; the limit is "
                                f"{limits.max_text_length}")
        texts.append(instance)
    return texts


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


def create_app(predictors: dict[str, Predictor], limits: Limits = Limits()):
    """A FastAPI application serving `predictors` by name."""
    workers = {name: ModelWorker(name, predictor, limits) for name, predictor in predictors.items()}
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        for worker in workers.values():
            worker.start()
        yield
        for worker in workers.values():
            await worker.stop()

    app = FastAPI(title="bertdistill serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workers = workers

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        messages = {404: f"no such path: {request.method} {request.url.path}",
                    405: f"method {request.method} not allowed on {request.url.path}"}
        message = messages.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        return error(400, f"invalid request: {str(exc.errors())[:300]}")

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {str(exc)[:300]}")

    def worker_of(name: str) -> ModelWorker:
        if name not in workers:
            raise ApiError(404, f"Servable not found for request: Latest({name[:100]}); models: {sorted(workers)}")
        return workers[name]

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": sorted(workers), "uptime_s": round(time.time() - started, 1)}

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request):
        worker = worker_of(name)
        body = await read_body(request, limits.max_body_bytes)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise ApiError(400, f"malformed JSON in the request body: {str(e)[:200]}") from None
        texts = parse_instances(payload, limits)
        return {"predictions": await worker.predict(texts)}

    @app.get("/v1/models/{name}")
    async def status(name: str):
        worker_of(name)
        return {"model_version_status": [{"version": MODEL_VERSION, "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    @app.get("/v1/models/{name}/metadata")
    async def metadata(name: str):
        worker = worker_of(name)
        return {"model_spec": {"name": name, "signature_name": SIGNATURE_NAME, "version": MODEL_VERSION},
                "metadata": {**worker.predictor.metadata(), "signature_name": SIGNATURE_NAME,
                             "request": {"instances": "list of texts (strings or {\"text\": string})"},
                             "limits": dataclasses.asdict(limits), "stats": dict(worker.stats)}}

    return app
