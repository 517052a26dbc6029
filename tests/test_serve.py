"""serve.py over tiny BERT and BiLSTM exports, through real HTTP on a free localhost port: every
endpoint, every class of bad input (the server stays up), 40 concurrent requests answered as
sequential ones; the micro-batching worker in-process with a fake predictor. Bounded in time."""
import asyncio
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bertdistill.predictor import Predictor
from bertdistill.serving import ApiError, Limits, ModelWorker, parse_instances
from tests.export_fixtures import BERT_MAX_SEQ_LENGTH, LABELS, LSTM_MAX_SEQ_LENGTH, TEXTS, tiny_exports
from tests.scripts import run_script

STARTUP_SECONDS = 90
REQUEST_SECONDS = 30
LIMITS = {"max_instances": 8, "max_text_length": 200, "max_body_bytes": 4000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, *, method=None, raw=None, headers=None):
    """(status, decoded JSON answer) of one HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_SECONDS) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return tiny_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    """The base URL of serve.py running on both exports (killed at the end, whatever happens)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with open(log, "w") as stderr:
        process = run_script("serve.py", f"--model_dir=bert={exports['bert'].folder}",
                             f"--model_dir=lstm={exports['lstm'].folder}", f"--port={port}", "--threads=1",
                             "--max_batch_size=16", "--batch_timeout_ms=5",
                             *(f"--{name}={value}" for name, value in LIMITS.items()),
                             stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve.py exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if request(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve.py did not answer /healthz in {STARTUP_SECONDS} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]  # bad input is answered, never a crash


def test_health_status_and_metadata(server):
    status, answer = request(f"{server}/healthz")
    assert status == 200 and answer["status"] == "ok" and answer["models"] == ["bert", "lstm"]
    status, answer = request(f"{server}/v1/models/bert")
    assert status == 200 and answer == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    for name, kind, length, inputs in (("bert", "bert_classifier", BERT_MAX_SEQ_LENGTH, 3),
                                       ("lstm", "bilstm_classifier", LSTM_MAX_SEQ_LENGTH, 1)):
        status, answer = request(f"{server}/v1/models/{name}/metadata")
        assert status == 200 and answer["model_spec"] == {"name": name, "signature_name": "serving_default",
                                                           "version": "1"}
        meta = answer["metadata"]
        assert (meta["model"], meta["labels"], meta["max_seq_length"], meta["precision"]) == (
            kind, LABELS, length, "float32")
        assert len(meta["inputs"]) == inputs and meta["limits"]["max_instances"] == LIMITS["max_instances"]


@pytest.mark.parametrize("name", ["bert", "lstm"])
def test_predict_matches_the_predictor(server, exports, name):
    texts = TEXTS[:6]
    expected = Predictor(exports[name].folder).predict(texts)
    for instances in (texts, [{"text": t} for t in texts]):
        status, answer = request(f"{server}/v1/models/{name}:predict",
                                 {"signature_name": "serving_default", "instances": instances})
        assert status == 200 and len(answer["predictions"]) == len(texts)
        for got, want in zip(answer["predictions"], expected):
            assert got["label"] == want.label and set(got) == {"label", "probability", "probabilities"}
            assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)


BAD_REQUESTS = [  # (body or raw bytes, status, part of the error)
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe\x00", 400, "malformed JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({"texts": ["a"]}, 400, 'missing "instances"'),
    ({"instances": "good"}, 400, "non-empty list"),
    ({"instances": []}, 400, "non-empty list"),
    ({"instances": ["good", 3]}, 400, "instances[1] must be a string"),
    ({"instances": [{"sentence": "good"}]}, 400, "instances[0] must be a string"),
    ({"instances": [None]}, 400, "instances[0] must be a string"),
    ({"instances": ["good"], "signature_name": "other"}, 400, "unknown signature_name"),
    ({"instances": ["good"], "extra": 1}, 400, "unknown keys ['extra']"),
    ({"instances": ["good"] * 9}, 413, "9 instances in one request; the limit is 8"),
    ({"instances": ["x" * 201]}, 413, "instances[0] has 201 characters; the limit is 200"),
    ({"instances": ["good " * 1000]}, 413, "the limit is 4000"),
]


def test_bad_requests_get_json_errors_and_the_server_stays_up(server):
    url = f"{server}/v1/models/bert:predict"
    for body, status, message in BAD_REQUESTS:
        raw = body if isinstance(body, bytes) else None
        got_status, answer = request(url, None if raw else body, raw=raw)
        assert (got_status, list(answer)) == (status, ["error"]), (body, answer)
        assert message in answer["error"], (body, answer)
    status, answer = request(f"{server}/v1/models/gpt:predict", {"instances": ["good"]})
    assert status == 404 and "Servable not found for request: Latest(gpt)" in answer["error"]
    assert request(f"{server}/v1/models/gpt")[0] == 404 and request(f"{server}/v1/models/gpt/metadata")[0] == 404
    assert request(f"{server}/nothing/here") == (404, {"error": "no such path: GET /nothing/here"})
    assert request(f"{server}/v1/models/bert", {"instances": ["good"]})[0] == 405
    assert request(url, None, method="GET")[0] == 404  # GET of ".../bert:predict" names no model
    # the body limit also holds for a body without Content-Length (chunked)
    chunked = urllib.request.Request(url, data=iter([b'{"instances": ["', b"x" * 5000, b'"]}']), method="POST",
                                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(chunked, timeout=REQUEST_SECONDS)
    assert caught.value.code == 413 and "exceeds the limit of 4000 bytes" in json.loads(caught.value.read())["error"]
    assert request(f"{server}/healthz")[0] == 200
    assert request(url, {"instances": ["good"]})[0] == 200


def test_concurrent_requests_get_the_sequential_answers(server):
    rng = np.random.default_rng(0)
    words = "the movie was great bad plot not good dull fun film a".split()
    jobs = [("bert" if i % 3 else "lstm", [" ".join(rng.choice(words, rng.integers(1, 12)))
                                          for _ in range(int(rng.integers(1, 4)))]) for i in range(40)]

    def ask(job):
        name, texts = job
        status, answer = request(f"{server}/v1/models/{name}:predict", {"instances": texts})
        assert status == 200, answer
        return answer["predictions"]

    sequential = [ask(job) for job in jobs]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        concurrent = list(pool.map(ask, jobs, timeout=120))
    assert time.monotonic() - start < 120
    for one, many in zip(sequential, concurrent):
        assert [p["label"] for p in one] == [p["label"] for p in many]
        for a, b in zip(one, many):
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    stats = request(f"{server}/v1/models/bert/metadata")[1]["metadata"]["stats"]
    assert stats["requests"] >= sum(name == "bert" for name, _ in jobs) * 2


# --- in-process: request parsing and the batching worker -------------------------------------------------


def test_parse_instances():
    limits = Limits(max_instances=2, max_text_length=5)
    assert parse_instances({"instances": ["ab", {"text": "c"}]}, limits) == ["ab", "c"]
    with pytest.raises(ApiError) as caught:
        parse_instances({"instances": ["abcdef"]}, limits)
    assert caught.value.status == 413


class FakePredictor:
    """Probabilities [len(text), 0]: shows which texts ran together and in what order."""

    labels = ["a", "b"]

    def __init__(self):
        self.calls = []

    def probabilities(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), 0.0] for t in texts], np.float32)

    def to_predictions(self, probabilities):
        return Predictor.to_predictions(self, probabilities)


@pytest.mark.parametrize("micro_batching,max_batch_size,expected_calls",
                         [(True, 100, 1), (True, 4, 5), (False, 100, 10)])
def test_micro_batching(micro_batching, max_batch_size, expected_calls):
    fake = FakePredictor()
    worker = ModelWorker("m", fake, Limits(micro_batching=micro_batching, max_batch_size=max_batch_size,
                                           batch_timeout_ms=200))
    requests = [["x" * (i + 1)] if i % 2 else ["x" * (i + 1), "y"] for i in range(10)]  # 15 texts

    async def scenario():
        worker.start()
        try:
            return await asyncio.wait_for(asyncio.gather(*(worker.predict(texts) for texts in requests)), 10)
        finally:
            await worker.stop()

    answers = asyncio.run(scenario())
    for texts, answer in zip(requests, answers):
        assert [p["probabilities"]["a"] for p in answer] == [len(t) for t in texts]
    assert len(fake.calls) == expected_calls and sum(map(len, fake.calls)) == 15
    assert max(map(len, fake.calls)) <= max(max_batch_size, 2)
    assert worker.queued_instances == 0 and worker.stats == {"requests": 10, "instances": 15,
                                                            "batches": expected_calls}
