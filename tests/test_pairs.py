"""Sentence pairs end to end on a user's own TSV task (8-line pair files, a tiny BERT written by
the test): run_classifier.py trains and exports a pair model whose export_info records its
inputs; the predictor, predict.py and serve.py answer pairs as the Keras model does and refuse a
single text; generate_dataset.py and tinybert/data_augmentation.py augment pairs; task_distill.py
refuses a transfer set of the other shape; run_pipeline.py distils the task in one command."""
import csv
import io
import json
import subprocess
import time

import numpy as np
import pytest

from bertdistill import errors

from bertdistill.distill import transfer_set

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier, BertConfig, BertEncoder
from bertdistill.serving.predictor import Predictor
from bertdistill.serving.serving import ApiError, Limits, parse_request
from tests.bert_fixtures import TINY_VOCAB, write_vocab
from tests.scripts import error_lines, free_port, run_script

WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]
CONFIG = dict(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=32)
TASK = ("--task_name=tsv", "--labels=neg,pos", "--text_a_column=premise", "--text_b_column=hypothesis",
        "--label_column=verdict")
SHORT = "--max_seq_length=16"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny BERT folder, a 1-layer student config and pair TSVs (id, premise, hypothesis, verdict)."""
    root = tmp_path_factory.mktemp("pairs")
    vocab = write_vocab(root / "vocab.txt")
    # a wide initialisation: different pairs get clearly different probabilities
    checkpoints.save_hf_folder(BertClassifier(BertEncoder(BertConfig(**CONFIG, initializer_range=0.5)), 2),
                               str(root / "tiny"), vocab, ["neg", "pos"], True)
    (root / "student.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 1}))
    rng = np.random.default_rng(3)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{i}\t{' '.join(rng.choice(WORDS, rng.integers(2, 6)))}\t{' '.join(rng.choice(WORDS, 3))}\t"
                f"{['neg', 'pos'][i % 2]}" for i in range(8)]
        (root / "data" / f"{split}.tsv").write_text("id\tpremise\thypothesis\tverdict\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def export(workspace):
    """The export folder of a pair teacher trained for two epochs."""
    out = workspace / "teacher"
    run_script("bert_finetune/run_classifier.py", *TASK, f"--data_dir={workspace / 'data'}",
               f"--init_checkpoint={workspace / 'tiny'}", f"--output_dir={out}", SHORT, "--train_batch_size=4",
               "--do_train", "--num_train_epochs=2", "--learning_rate=1e-3")
    return out / "export"


def dev_pairs(workspace) -> tuple[list[str], list[str]]:
    rows = [line.split("\t") for line in (workspace / "data" / "dev.tsv").read_text().splitlines()[1:]]
    return [row[1] for row in rows], [row[2] for row in rows]


def keras_logits(folder, texts, texts_b) -> np.ndarray:
    """The exported model's logits through Keras (the training side's tokenizer and model)."""
    teacher = checkpoints.load_teacher(str(folder))
    ids, types = teacher.tokenizer.encode_batch(texts, texts_b, 16)
    width = max(map(len, ids))
    batch = {"input_ids": np.array([row + [0] * (width - len(row)) for row in ids], np.int32),
             "attention_mask": np.array([[1] * len(row) + [0] * (width - len(row)) for row in ids], np.int32),
             "token_type_ids": np.array([row + [0] * (width - len(row)) for row in types], np.int32)}
    return np.asarray(teacher.model(batch, training=False), np.float64)


def keras_probabilities(folder, texts, texts_b) -> np.ndarray:
    logits = keras_logits(folder, texts, texts_b)
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_export_records_its_inputs_and_the_predictor_answers_pairs(workspace, export):
    info = json.loads((export / "export_info.json").read_text())
    assert info["text_inputs"] == ["text", "text_b"] and info["labels"] == ["neg", "pos"]
    assert info["columns"] == {"text": "premise", "text_b": "hypothesis", "label": "verdict"}
    texts, texts_b = dev_pairs(workspace)
    predictor = Predictor(str(export), quantized=False, batch_size=3)
    assert predictor.pairs and predictor.metadata()["text_inputs"] == ["text", "text_b"]
    expected = keras_probabilities(export, texts, texts_b)
    np.testing.assert_allclose(predictor.probabilities(texts, texts_b), expected, atol=1e-4)
    assert np.abs(predictor.probabilities(texts, texts_b) - predictor.probabilities(texts_b, texts)).max() > 1e-4
    with pytest.raises(errors.UserError, match=r"reads sentence pairs \(text, text_b\): give each text its text_b"):
        predictor.predict(texts)
    # the INT8 gate ran on the dev pairs
    assert info["int8_gate"]["examples"] == 8


def test_predict_py_answers_pairs_from_a_table_and_from_lines(workspace, export, tmp_path):
    texts, texts_b = dev_pairs(workspace)
    expected = keras_probabilities(export, texts, texts_b)
    table = run_script("predict.py", f"--model_dir={export}", "--noquantized",
                       f"--input_file={workspace / 'data' / 'dev.tsv'}")  # the trained columns by default
    rows = list(csv.DictReader(io.StringIO(table.stdout), delimiter="\t"))
    assert [row["id"] for row in rows] == [str(i) for i in range(8)]
    assert [(row["text"], row["text_b"]) for row in rows] == list(zip(texts, texts_b))
    np.testing.assert_allclose([[float(row["probability_neg"]), float(row["probability_pos"])] for row in rows],
                               expected, atol=1e-4)
    lines = tmp_path / "pairs.txt"
    lines.write_text("".join(f"{a}\t{b}\n" for a, b in zip(texts, texts_b)))
    answered = run_script("predict.py", f"--model_dir={export}", "--noquantized", f"--input_file={lines}",
                          "--input_format=lines", "--output_format=jsonl")
    answers = [json.loads(line) for line in answered.stdout.splitlines()]
    assert [(a["text"], a["text_b"]) for a in answers] == list(zip(texts, texts_b))
    np.testing.assert_allclose([a["probabilities"]["pos"] for a in answers], expected[:, 1], atol=1e-5)

    single = run_script("predict.py", f"--model_dir={export}", "the movie was great", check=False)
    assert single.returncode == 2 and error_lines(single) == [
        "error: argument:1: expected a sentence pair, text<TAB>text_b (the model reads pairs), got 0 tabs"]


def test_serve_answers_pairs_in_both_formats_and_refuses_a_single_text(workspace, export, tmp_path):
    import urllib.error
    import urllib.request

    texts, texts_b = dev_pairs(workspace)
    expected = keras_probabilities(export, texts, texts_b)
    port = free_port()
    log = tmp_path / "serve.txt"
    with open(log, "w") as stderr:
        process = run_script("serve.py", f"--model_dir=pairs={export}", "--noquantized", f"--port={port}",
                             "--threads=1", stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}/v1/models/pairs"

    def post(body):
        request = urllib.request.Request(f"{url}:predict", json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/metadata", timeout=5) as answer:
                    metadata = json.loads(answer.read())
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert set(metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]) == {
            "text", "text_b"}
        status, rows = post({"instances": [{"text": a, "text_b": b} for a, b in zip(texts, texts_b)]})
        assert status == 200
        np.testing.assert_allclose([row["probabilities"] for row in rows["predictions"]], expected, atol=1e-4)
        status, columns = post({"inputs": {"text": texts, "text_b": texts_b}})
        assert status == 200
        np.testing.assert_allclose(columns["outputs"]["probabilities"], expected, atol=1e-4)
        assert post({"instances": ["the movie"]}) == (400, {"error": 'instances[0] must be an object {"text": '
                                                                     'string, "text_b": string}, got a string'})
        assert post({"instances": [{"text": "the movie"}]})[0] == 400
    finally:
        process.terminate()
        process.wait(timeout=10)
    with pytest.raises(ApiError, match=r"has unknown inputs \['text_b'\]"):  # a pair for a single-text model
        parse_request({"instances": [{"text": "a", "text_b": "b"}]}, ("text",), Limits())


def test_generate_dataset_augments_pairs_and_refuses_single_texts_for_a_pair_teacher(workspace, export, tmp_path):
    output = tmp_path / "transfer.tsv"
    run_script("generate_dataset.py", *TASK, f"--input={workspace / 'data'}", f"--model={export}",
               f"--output={output}", "--augment_factor=3", SHORT, "--replacement=teacher_embeddings")
    assert output.read_text().splitlines()[0] == "sentence\tsentence_b\tlabel\tlogit_neg\tlogit_pos"
    examples, logits = transfer_set.read_transfer_set(str(output), ["neg", "pos"])
    train = [line.split("\t") for line in (workspace / "data" / "train.tsv").read_text().splitlines()[1:]]
    originals = [e for e in examples if (e.text_a, e.text_b) in {(row[1], row[2]) for row in train}]
    assert len(originals) == 8 and len(examples) > 8 and all(e.text_b for e in examples)
    assert len({(e.text_a, e.text_b) for e in examples}) == len(examples)  # every new pair differs
    np.testing.assert_allclose(logits, keras_logits(export, [e.text_a for e in examples],
                                                    [e.text_b for e in examples]), atol=1e-4)

    renamed = run_script("generate_dataset.py", "--task_name=tsv", "--labels=neg,pos", "--text_a_column=premise",
                         "--label_column=verdict", f"--input={workspace / 'data'}", f"--model={export}",
                         f"--output={tmp_path / 'single.tsv'}", SHORT, check=False)
    assert renamed.returncode == 2
    assert error_lines(renamed) == [f"error: --input={workspace / 'data'} holds single texts but the teacher {export} "
                                    "reads sentence pairs (text, text_b): use data of the task the teacher was "
                                    "trained on (see --text_b_column)"]


def test_tinybert_augmentation_of_pairs(workspace, export, tmp_path):
    output = tmp_path / "augmented.tsv"
    run_script("tinybert/data_augmentation.py", *TASK, f"--input={workspace / 'data'}", f"--model={export}",
               f"--output={output}", "--augment_factor=2", "--top_k=3", "--p=0.5", SHORT)
    examples, logits = transfer_set.read_labelled_sentences(str(output), ["neg", "pos"])
    assert logits is None and output.read_text().startswith("sentence\tsentence_b\tlabel\n")
    assert len(examples) > 8 and all(e.text_b for e in examples)


def test_task_distill_refuses_a_transfer_set_of_the_other_shape(workspace, export, tmp_path):
    single = tmp_path / "single.tsv"
    single.write_text(transfer_set.header(["neg", "pos"]) + "the movie\tpos\t0.1\t0.2\n")
    result = run_script("tinybert/task_distill.py", *TASK, f"--teacher_model={export}",
                        f"--student_config={workspace / 'student.json'}", f"--data_dir={workspace / 'data'}",
                        f"--augmented_file={single}", f"--output_dir={tmp_path / 'out'}", SHORT, check=False)
    assert result.returncode == 2 and error_lines(result) == [
        f"error: --augmented_file={single} holds single texts but the teacher {export} reads sentence pairs "
        "(text, text_b): use data of the task the teacher was trained on (see --text_b_column)"]


def test_run_pipeline_distils_a_pair_task_in_one_command(workspace, tmp_path):
    output_dir = tmp_path / "run"
    result = run_script(
        "run_pipeline.py", *TASK, f"--data_dir={workspace / 'data'}", f"--init_checkpoint={workspace / 'tiny'}",
        f"--student_config={workspace / 'student.json'}", f"--output_dir={output_dir}", "--preset=smoke",
        "--num_teachers=1", "--augment_factor=1", "--speed_rounds=1", "--latency_texts=4", "--teacher_epochs=1",
        f"--stage_flag=teacher:{SHORT}", "--stage_flag=teacher:--train_batch_size=8", f"--stage_flag=transfer:{SHORT}",
        f"--stage_flag=tinybert:{SHORT}", "--stage_flag=tinybert:--train_batch_size=8", timeout=900)
    skipped = "the BiLSTM student reads single sentences; this task has sentence pairs"
    assert f"[pipeline] stage bilstm_gold: skipped: {skipped}" in result.stdout
    results = json.loads((output_dir / "report" / "results.json").read_text())
    assert set(results["models"]) == {"teacher_1", "tinybert"} and results["dev_examples"] == 8
    assert "skipped" in results["robustness"]
    markdown = (output_dir / "report" / "results.md").read_text()
    assert f"Stage bilstm_distil skipped: {skipped}." in markdown
    info = json.loads((output_dir / "tinybert" / "export" / "export_info.json").read_text())
    assert info["text_inputs"] == ["text", "text_b"] and info["columns"]["text_b"] == "hypothesis"
    transfer = (output_dir / "transfer" / "augmented.tsv").read_text().splitlines()[0]
    assert transfer.startswith("sentence\tsentence_b\tlabel")


def test_the_string_signature_of_a_pair_model_takes_text_b(workspace, export, tmp_path):
    from tests.serving_loader import run_signatures

    info = json.loads((export / "export_info.json").read_text())
    assert info["saved_model_signatures"]["serve_text"]["inputs"] == ["text", "text_b"]
    texts, texts_b = dev_pairs(workspace)
    encode = np.vectorize(lambda t: t.encode("utf-8"), otypes=[bytes])
    (out,) = run_signatures([(str(export / "saved_model"), "serve_text",
                              {"text": encode(texts), "text_b": encode(texts_b)})], tmp_path)
    np.testing.assert_allclose(out["probabilities"], keras_probabilities(export, texts, texts_b), atol=1e-4)
