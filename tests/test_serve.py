"""serve.py over tiny BERT and BiLSTM exports, through real HTTP on a free localhost port: TF
Serving's row and columnar formats, versions in the URL, status and metadata, every class of bad
input (the server stays up), good requests answered as sequential ones while bad ones arrive
among them, startup errors in one line; request parsing and the micro-batching worker in-process
with a fake predictor. Bounded in time."""
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

from bertdistill.serving.predictor import Predictor
from bertdistill.serving.serving import ApiError, Limits, ModelWorker, parse_request
from tests.export_fixtures import BERT_MAX_SEQ_LENGTH, LABELS, LSTM_MAX_SEQ_LENGTH, TEXTS, tiny_exports
from tests.scripts import error_lines, run_script

STARTUP_SECONDS = 90
REQUEST_SECONDS = 30
LIMITS = {"max_instances": 8, "max_text_length": 200, "max_body_bytes": 4000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, *, method=None, raw=None, headers=None):
    """(status, decoded JSON answer) of one HTTP request; `raw`: the body as bytes."""
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
    """The base URL of serve.py serving bert (version 1), lstm version 1 and, as lstm version 3, the
    BERT export (killed at the end, whatever happens)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with open(log, "w") as stderr:
        process = run_script("serve.py", f"--model_dir=bert={exports['bert'].folder}",
                             f"--model_dir=lstm={exports['lstm'].folder}",
                             f"--model_dir=lstm@3={exports['bert'].folder}", f"--port={port}", "--threads=1",
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


def expected_outputs(folder, texts):
    """The predictor's answer in the server's columnar shape."""
    probabilities = Predictor(folder).probabilities(texts)
    return {"label": [LABELS[i] for i in probabilities.argmax(1)], "probabilities": probabilities}


def assert_predictions(predictions, expected):
    assert [p["label"] for p in predictions] == expected["label"]
    for got, want in zip(predictions, expected["probabilities"]):
        assert set(got) == {"label", "probability", "probabilities"}
        assert got["probabilities"] == pytest.approx(want.tolist(), abs=1e-5)
        assert got["probability"] == pytest.approx(max(want), abs=1e-5)


def test_health_status_and_metadata(server):
    status, answer = request(f"{server}/healthz")
    assert status == 200 and answer["status"] == "ok" and answer["models"] == {"bert": [1], "lstm": [1, 3]}
    available = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert request(f"{server}/v1/models/bert") == (200, {"model_version_status": [{"version": "1", **available}]})
    assert request(f"{server}/v1/models/lstm") == (200, {"model_version_status": [
        {"version": "1", **available}, {"version": "3", **available}]})
    assert request(f"{server}/v1/models/lstm/versions/3") == (
        200, {"model_version_status": [{"version": "3", **available}]})
    for path, version, kind, length in (("bert", "1", "bert_classifier", BERT_MAX_SEQ_LENGTH),
                                        ("lstm", "3", "bert_classifier", BERT_MAX_SEQ_LENGTH),  # the highest
                                        ("lstm/versions/1", "1", "bilstm_classifier", LSTM_MAX_SEQ_LENGTH)):
        status, answer = request(f"{server}/v1/models/{path}/metadata")
        assert status == 200 and answer["model_spec"] == {"name": path.split("/")[0],
                                                           "signature_name": "serving_default", "version": version}
        signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["method_name"] == "tensorflow/serving/predict"
        assert signature["inputs"] == {"text": {"dtype": "DT_STRING", "name": "text:0", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}}  # only what the endpoint accepts
        assert {name: (info["dtype"], [d["size"] for d in info["tensor_shape"]["dim"]])
                for name, info in signature["outputs"].items()} == {
            "label": ("DT_STRING", ["-1"]), "probability": ("DT_FLOAT", ["-1"]),
            "probabilities": ("DT_FLOAT", ["-1", str(len(LABELS))])}
        export = answer["metadata"]["export"]
        assert (export["model"], export["labels"], export["max_seq_length"], export["precision"]) == (
            kind, LABELS, length, "float32")
        assert "inputs" not in export and answer["metadata"]["limits"]["max_instances"] == LIMITS["max_instances"]


@pytest.mark.parametrize("path,kind", [("bert", "bert"), ("lstm/versions/1", "lstm"), ("lstm/versions/3", "bert"),
                                       ("lstm", "bert")])
def test_row_and_columnar_formats(server, exports, path, kind):
    texts = TEXTS[:6]
    expected = expected_outputs(exports[kind].folder, texts)
    url = f"{server}/v1/models/{path}:predict"
    for body in ({"signature_name": "serving_default", "instances": texts},
                 {"instances": [{"text": t} for t in texts]}):
        status, answer = request(url, body)
        assert status == 200 and list(answer) == ["predictions"], answer
        assert_predictions(answer["predictions"], expected)
    for body in ({"inputs": texts}, {"signature_name": "serving_default", "inputs": {"text": texts}}):
        status, answer = request(url, body)
        assert status == 200 and list(answer) == ["outputs"], answer
        outputs = answer["outputs"]
        assert outputs["label"] == expected["label"]
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-5)
        np.testing.assert_allclose(outputs["probability"], expected["probabilities"].max(1), atol=1e-5)


BAD_REQUESTS = [  # (body or raw bytes, status, part of the error)
    (b"{not json", 400, "malformed JSON"),
    (b'{"instances": ["\xff\xfe"]}', 400, "malformed JSON"),  # invalid UTF-8
    (b'{"instances": ["\\ud800"]}', 400, "instances[0] is not valid Unicode: a lone surrogate \\ud800"),
    (b'{"inputs": {"text": ["ok", "a\\udfffb"]}}', 400, '"inputs".text[1] is not valid Unicode'),
    (b"[" * 1500 + b"]" * 1500, 400, "nested too deeply"),
    (b'{"instances": ' + b"[" * 1200 + b"]" * 1200 + b"}", 400, "nested too deeply"),
    ([1, 2], 400, "must be a JSON object"),
    ({"texts": ["a"]}, 400, "unknown keys ['texts']"),
    ({}, 400, 'either "instances" (row format) or "inputs" (columnar format)'),
    ({"instances": ["a"], "inputs": ["a"]}, 400, "not both"),
    ({"instances": "good"}, 400, '"instances" must be a non-empty array'),
    ({"instances": []}, 400, '"instances" must be a non-empty array'),
    ({"instances": ["good", 3]}, 400, "instances[1] must be a string, got a number"),
    ({"instances": [["good"]]}, 400, "instances[0] must be a string, got an array"),
    ({"instances": [{"sentence": "good"}]}, 400, "instances[0] has unknown inputs ['sentence']: the inputs are ['text']"),
    ({"instances": [{}]}, 400, "instances[0] lacks ['text']"),
    ({"instances": [{"text": None}]}, 400, "instances[0].text must be a string, got null"),
    ({"inputs": "good"}, 400, '"inputs" must be a non-empty array of strings, got a string'),
    ({"inputs": {"text": []}}, 400, '"inputs".text must be a non-empty array'),
    ({"inputs": {"text": ["a"], "text_b": ["b"]}}, 400, "\"inputs\" has unknown inputs ['text_b']"),
    ({"inputs": [True]}, 400, '"inputs"[0] must be a string, got a boolean'),
    ({"instances": ["good"], "signature_name": "other"}, 400, "unknown signature_name"),
    ({"instances": ["good"] * 9}, 413, "9 instances in one request; the limit is 8"),
    ({"inputs": {"text": ["good"] * 9}}, 413, "9 instances in one request; the limit is 8"),
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
    status, answer = request(f"{server}/v1/models/bert/versions/2:predict", {"instances": ["good"]})
    assert status == 404 and "Servable not found for request: Specific(bert, 2); versions: [1]" in answer["error"]
    for path in ("gpt", "gpt/metadata", "bert/versions/2", "bert/versions/2/metadata", "bert/versions/x"):
        assert request(f"{server}/v1/models/{path}")[0] == 404, path
    assert request(f"{server}/nothing/here") == (404, {"error": "no such path: GET /nothing/here"})
    assert request(f"{server}/v1/models/bert", {"instances": ["good"]})[0] == 405
    for path in ("bert:predict", "bert/versions/1:predict"):
        assert request(f"{server}/v1/models/{path}", method="GET") == (
            405, {"error": f"method GET not allowed on /v1/models/{path}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server}/v1/models/bert:predict", timeout=REQUEST_SECONDS)
    assert caught.value.headers["Allow"] == "POST"
    # the body limit also holds for a body without Content-Length (chunked)
    chunked = urllib.request.Request(url, data=iter([b'{"instances": ["', b"x" * 5000, b'"]}']), method="POST",
                                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(chunked, timeout=REQUEST_SECONDS)
    assert caught.value.code == 413 and "exceeds the limit of 4000 bytes" in json.loads(caught.value.read())["error"]
    assert request(f"{server}/healthz")[0] == 200
    assert request(url, {"instances": ["good"]})[0] == 200


def test_bad_requests_among_concurrent_good_ones_fail_alone(server):
    """50 good requests (both models, 1-3 texts each) sent at once with 5 bad ones among them get
    the answers they get one at a time; each bad one gets its own 400."""
    rng = np.random.default_rng(0)
    words = "the movie was great bad plot not good dull fun film a".split()
    good = [("bert" if i % 3 else "lstm/versions/1",
             json.dumps({"instances": [" ".join(rng.choice(words, rng.integers(1, 12)))
                                       for _ in range(int(rng.integers(1, 4)))]}).encode()) for i in range(50)]
    bad = [("bert", b'{"instances": ["\\ud800"]}'), ("lstm/versions/1", b'{"instances": ["good", "\\udc00"]}'),
           ("bert", b'{"inputs": ["fine", "\\ud800\\ud800"]}'), ("bert", b"[" * 3000),
           ("lstm/versions/1", b'{"instances": [{"text": 1}]}')]
    jobs = good[:10] + bad[:2] + good[10:30] + bad[2:] + good[30:]

    def ask(job):
        path, body = job
        return request(f"{server}/v1/models/{path}:predict", raw=body)

    sequential = [ask(job) for job in good]
    assert all(status == 200 for status, _ in sequential)
    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(ask, jobs, timeout=120))
    answers = dict(zip(jobs, concurrent))
    assert [answers[job][0] for job in bad] == [400] * len(bad)
    for job, (_, one) in zip(good, sequential):
        status, many = answers[job]
        assert status == 200, many
        assert [p["label"] for p in one["predictions"]] == [p["label"] for p in many["predictions"]]
        for a, b in zip(one["predictions"], many["predictions"]):
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--host=192.0.2.1"], "error: cannot listen on --host=192.0.2.1"),
    (["--host=no.such.host.invalid"], "--host=no.such.host.invalid: not an address of this machine"),
    (["--model_dir=a b=x"], "--model_dir: 'a b' must be a model name"),
    (["--model_dir=m@x=x"], "--model_dir: 'm@x' must be a model name"),
])
def test_startup_errors_are_one_line(exports, args, message):
    result = run_script("serve.py", f"--model_dir=m={exports['lstm'].folder}", f"--port={free_port()}", *args,
                        check=False, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(error_lines(result)) == 1 and message in error_lines(result)[0], result.stderr


def test_a_port_in_use_is_one_line(exports):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script("serve.py", f"--model_dir=m={exports['lstm'].folder}", f"--port={port}",
                            check=False, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert error_lines(result) == [f"error: cannot listen on --host=127.0.0.1 --port={port}: Address "
                                   "already in use; choose another --port or stop the server using it"]


# --- in-process: request parsing and the batching worker -------------------------------------------------


def test_parse_request():
    limits = Limits(max_instances=2, max_text_length=5)
    assert parse_request({"instances": ["ab", {"text": "c"}]}, ("text",), limits) == (False, {"text": ["ab", "c"]})
    assert parse_request({"inputs": ["ab", ""]}, ("text",), limits) == (True, {"text": ["ab", ""]})
    pair = ("text", "text_b")  # a model with two named inputs: only the named forms
    assert parse_request({"instances": [{"text": "a", "text_b": "b"}]}, pair, limits) == (
        False, {"text": ["a"], "text_b": ["b"]})
    assert parse_request({"inputs": {"text": ["a", "c"], "text_b": ["b", "d"]}}, pair, limits) == (
        True, {"text": ["a", "c"], "text_b": ["b", "d"]})
    for body, status, message in [({"instances": ["abcdef"]}, 413, "instances[0] has 6 characters"),
                                  ({"instances": ["a"]}, 400, 'instances[0] must be an object {"text": string, '
                                                              '"text_b": string}, got a string'),
                                  ({"inputs": ["a"]}, 400, '"inputs" must be an object'),
                                  ({"inputs": {"text": ["a", "c"], "text_b": ["b"]}}, 400, "different lengths [2, 1]"),
                                  ({"instances": [{"text": "a"}]}, 400, "instances[0] lacks ['text_b']")]:
        with pytest.raises(ApiError) as caught:
            parse_request(body, pair if status == 400 else ("text",), limits)
        assert caught.value.status == status and message in caught.value.message


class FakePredictor:
    """Probabilities [row[0], 0] of encoded rows [len(text)]: shows which texts ran together and in what order."""

    labels = ["a", "b"]
    text_inputs = ("text",)

    def __init__(self):
        self.calls = []

    def encode(self, texts):
        return [[len(t)] for t in texts]

    def run_rows(self, rows):
        self.calls.append([row[0] for row in rows])
        return {"probabilities": np.array([[row[0], 0.0] for row in rows], np.float32)}


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
            rows = [await worker.encode({"text": texts}) for texts in requests]
            return await asyncio.wait_for(asyncio.gather(*(worker.predict(r) for r in rows)), 10)
        finally:
            await worker.stop()

    answers = asyncio.run(scenario())
    for texts, answer in zip(requests, answers):
        assert answer[:, 0].tolist() == [len(t) for t in texts]
    assert len(fake.calls) == expected_calls and sum(map(len, fake.calls)) == 15
    assert max(map(len, fake.calls)) <= max(max_batch_size, 2)
    assert worker.queued_instances == 0 and worker.stats == {"requests": 10, "instances": 15,
                                                            "batches": expected_calls}
