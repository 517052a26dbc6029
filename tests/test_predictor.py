"""bertdistill/serving/predictor.py and predict.py on tiny BERT and BiLSTM exports: the Keras models' own
probabilities, truncation, length-sorted batches, no TensorFlow, clear errors for bad folders;
the command line on arguments, stdin, a TSV column with ids and a plain-text file, its output read
back with csv (and pandas when installed); the distil_lstm/predict.py alias."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bertdistill import errors
from bertdistill.serving.predictor import Predictor
from tests.export_fixtures import BERT_MAX_SEQ_LENGTH, LABELS, LSTM_MAX_SEQ_LENGTH, TEXTS, tiny_exports
from tests.scripts import error_lines, run_script

KINDS = ("bert", "lstm")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return tiny_exports(tmp_path_factory)


@pytest.mark.parametrize("kind", KINDS)
def test_predictor_matches_the_keras_model(exports, kind):
    built = exports[kind]
    predictor = Predictor(built.folder, batch_size=3)  # several length-sorted batches, order restored
    expected = built.keras_probabilities(TEXTS)
    probabilities = predictor.probabilities(TEXTS)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert probabilities.std(axis=0).max() > 0.01  # the texts get different answers: the order is tested
    predictions = predictor.predict(TEXTS)
    assert [p.label for p in predictions] == [LABELS[i] for i in expected.argmax(1)]
    for prediction, row in zip(predictions, probabilities):
        assert list(prediction.probabilities) == LABELS
        assert prediction.probability == pytest.approx(row.max())
        assert prediction.probabilities == pytest.approx(dict(zip(LABELS, row.tolist())))
    # the model's own probabilities output, i.e. softmax of its logits
    logits = predictor.logits(TEXTS)
    np.testing.assert_allclose(probabilities, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), atol=1e-6)
    assert predictor.predict([]) == [] and predictor.probabilities([]).shape == (0, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_int8_model_is_close(exports, kind):
    float32, int8 = Predictor(exports[kind].folder), Predictor(exports[kind].folder, quantized=True, threads=1)
    assert int8.precision == "int8" and int8.metadata()["model_file"] == "model.int8.onnx"
    np.testing.assert_allclose(int8.probabilities(TEXTS), float32.probabilities(TEXTS), atol=0.1)


def test_truncation_at_max_seq_length(exports):
    long_text = "the movie was great " * 10
    bert = Predictor(exports["bert"].folder)
    ids = bert.encode([long_text])[0]
    assert len(ids) == BERT_MAX_SEQ_LENGTH and ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP]
    assert bert.encode(["the movie"])[0] == [2, 5, 6, 3]
    lstm = Predictor(exports["lstm"].folder)
    assert len(lstm.encode([long_text])[0]) == LSTM_MAX_SEQ_LENGTH
    for kind, predictor, keep in (("bert", bert, BERT_MAX_SEQ_LENGTH - 2), ("lstm", lstm, LSTM_MAX_SEQ_LENGTH)):
        words = long_text.split()
        truncated, longer = " ".join(words[:keep]), " ".join(words[:keep] + ["bad", "dull", "plot"])
        np.testing.assert_allclose(predictor.probabilities([longer]), predictor.probabilities([truncated]), atol=1e-6)
        np.testing.assert_allclose(predictor.probabilities([long_text]),
                                   exports[kind].keras_probabilities([long_text]), atol=1e-4)


def test_metadata(exports):
    bert, lstm = Predictor(exports["bert"].folder).metadata(), Predictor(exports["lstm"].folder).metadata()
    assert bert["model"] == "bert_classifier" and bert["text_encoding"] == "wordpiece"
    assert sorted(bert["inputs"]) == ["attention_mask", "input_ids", "token_type_ids"]
    assert lstm["model"] == "bilstm_classifier" and lstm["inputs"] == ["input_ids"] and lstm["text_encoding"] == "words"
    assert (bert["max_seq_length"], lstm["max_seq_length"]) == (BERT_MAX_SEQ_LENGTH, LSTM_MAX_SEQ_LENGTH)
    assert bert["labels"] == lstm["labels"] == LABELS and bert["precision"] == "float32"


def test_no_tensorflow_at_inference(exports):
    code = ("import sys, bertdistill.serving.predictor, bertdistill.serving.serving\n"
            "from bertdistill.serving.predictor import Predictor\n"
            f"for folder in {[exports['bert'].folder, exports['lstm'].folder]!r}:\n"
            "    Predictor(folder).predict(['the movie was great'])\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def copy_export(exports, kind, tmp_path):
    folder = tmp_path / f"{kind}_copy"
    shutil.copytree(exports[kind].folder, folder)
    return folder


def edit_json(path, change):
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def test_folders_that_are_not_exports(exports, tmp_path):
    with pytest.raises(errors.MissingFileError, match="does not exist"):
        Predictor(str(tmp_path / "nope"))
    with pytest.raises(errors.MissingFileError, match="is not an export folder of this toolkit: no export_info.json"):
        Predictor(str(tmp_path))
    run = tmp_path / "run"
    shutil.copytree(exports["lstm"].folder, run / "export")
    with pytest.raises(errors.MissingFileError, match=r"is a run folder, not an export folder: pass .*run/export"):
        Predictor(str(run))
    folder = copy_export(exports, "bert", tmp_path)
    edit_json(folder / "export_info.json", lambda info: info.update(model="gpt"))
    with pytest.raises(errors.ConfigError, match=r"export_info.json: key 'model' is 'gpt', not a model the predictor knows"):
        Predictor(str(folder))


@pytest.mark.parametrize("kind", KINDS)
def test_files_that_disagree(exports, tmp_path, kind):
    folder = copy_export(exports, kind, tmp_path)
    vocab = (folder / "vocab.txt").read_text().splitlines()
    (folder / "vocab.txt").write_text("\n".join(vocab[:-1]) + "\n")
    with pytest.raises(errors.ConfigError, match=rf"vocab.txt has {len(vocab) - 1} tokens; config.json says"):
        Predictor(str(folder))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")

    (folder / "labels.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(errors.ConfigError, match=r"labels.json \['a', 'b'\] and export_info.json .* disagree"):
        Predictor(str(folder))

    # three labels everywhere, but the model has two outputs
    three = ["neg", "neutral", "pos"]
    (folder / "labels.json").write_text(json.dumps(three))
    edit_json(folder / "export_info.json", lambda info: info.update(labels=three))
    if kind == "bert":
        edit_json(folder / "config.json", lambda c: c.update(id2label=dict(enumerate(three))))
    else:
        edit_json(folder / "config.json", lambda c: c.update(num_labels=3))
    with pytest.raises(errors.ConfigError, match="outputs 2 probabilities per text; labels.json has 3 labels"):
        Predictor(str(folder))
    shutil.copy(os.path.join(exports[kind].folder, "labels.json"), folder / "labels.json")
    shutil.copy(os.path.join(exports[kind].folder, "export_info.json"), folder / "export_info.json")
    shutil.copy(os.path.join(exports[kind].folder, "config.json"), folder / "config.json")

    (folder / "model.int8.onnx").unlink()
    with pytest.raises(errors.MissingFileError, match="has no model.int8.onnx; drop quantized"):
        Predictor(str(folder), quantized=True)
    (folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(errors.ConfigError, match="ONNX Runtime cannot load it"):
        Predictor(str(folder))


def test_bert_casing_and_length_checks(exports, tmp_path):
    folder = copy_export(exports, "bert", tmp_path)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    with pytest.raises(errors.ConfigError, match="disagree on do_lower_case"):
        Predictor(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    edit_json(folder / "export_info.json", lambda info: info.update(max_seq_length=99))
    with pytest.raises(errors.ConfigError, match="max_seq_length 99 is outside 2..16"):
        Predictor(str(folder))


def test_errors_are_one_line(exports, tmp_path):
    folder = copy_export(exports, "lstm", tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(errors.ConfigError) as caught:
        Predictor(str(folder))
    assert "\n" not in str(caught.value) and "config.json" in str(caught.value)


def test_distil_lstm_alias(exports):
    from distil_lstm.predict import TextClassifier, read_export_folder
    from distil_lstm.vocab import WordVocab

    folder = exports["lstm"].folder
    classifier = TextClassifier(folder, intra_op_threads=1)
    expected = exports["lstm"].keras_probabilities(TEXTS)
    assert classifier.predict(TEXTS) == [LABELS[i] for i in expected.argmax(1)]
    logits = classifier.logits(TEXTS)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), expected, atol=1e-4)
    config, labels, vocab = read_export_folder(folder)
    assert isinstance(vocab, WordVocab) and labels == LABELS and config["max_seq_length"] == LSTM_MAX_SEQ_LENGTH


# --- predict.py -------------------------------------------------------------------------------------------


def read_tsv(text):
    """(header, rows) of predict.py's TSV output, read by the csv module's rules."""
    header, *rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    return header, rows


@pytest.mark.parametrize("kind", KINDS)
def test_cli_on_arguments(exports, kind):
    texts = TEXTS[:3]
    result = run_script("predict.py", f"--model_dir={exports[kind].folder}", "--threads=1", *texts, timeout=120)
    header, rows = read_tsv(result.stdout)
    assert header == ["label", "probability", "probability_neg", "probability_pos", "text"]
    expected = Predictor(exports[kind].folder).predict(texts)
    assert [row[0] for row in rows] == [p.label for p in expected] and [row[-1] for row in rows] == texts
    for row, prediction in zip(rows, expected):
        assert float(row[1]) == pytest.approx(prediction.probability, abs=1e-6)
        assert [float(x) for x in row[2:4]] == pytest.approx(list(prediction.probabilities.values()), abs=1e-6)
    assert result.stderr.strip() == ""  # no progress line, no warnings for texts on the command line


def test_cli_on_stdin_jsonl_and_the_alias(exports):
    folder = exports["lstm"].folder
    texts = ["the movie was great", "", "bad\tplot"]
    expected = Predictor(folder).predict(texts)
    for script in ("predict.py", "distil_lstm/predict.py"):
        process = run_script(script, f"--model_dir={folder}", "--output_format=jsonl", "--quantized",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate("\n".join(texts) + "\n", timeout=120)
        finally:
            process.kill()
        assert process.returncode == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["text"] for r in rows] == texts and [set(r) for r in rows] == [
            {"label", "probability", "probabilities", "text"}] * 3
        int8 = Predictor(folder, quantized=True).predict(texts)
        assert [r["label"] for r in rows] == [p.label for p in int8]
        assert [r["probabilities"] for r in rows] == [pytest.approx(p.probabilities, abs=1e-6) for p in int8]
    assert len(expected) == 3


def test_cli_on_a_tsv_column(exports, tmp_path):
    folder = exports["bert"].folder
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(TEXTS) if t))
    texts = [t for t in TEXTS if t]
    out = tmp_path / "out" / "predictions.tsv"
    result = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", "--text_column=sentence",
                        f"--output_file={out}", "--batch_size=2", timeout=120)
    header, rows = read_tsv(out.read_text())
    assert [row[-1] for row in rows] == texts
    assert [row[0] for row in rows] == [p.label for p in Predictor(folder).predict(texts)]
    assert f"predict: {len(texts)}/{len(texts)} texts (100%)" in result.stderr  # the progress line
    assert sorted(os.listdir(out.parent)) == ["predictions.tsv"]  # no temporary file left
    by_index = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", "--text_column=0",
                          "--output_format=jsonl", timeout=120)
    assert [json.loads(line)["text"] for line in by_index.stdout.splitlines()] == texts


QUOTED = ['a "quoted" film', '"starts with a quote', "ends with a quote\"", "NA", "null", "", "  spaced  ",
          "N/A", "#"]  # texts a TSV writer or reader may mangle


@pytest.fixture(scope="module")
def test_tsv_predictions(exports, tmp_path_factory):
    """SST-2 test.tsv's layout (`index`, `sentence`) with texts that need quoting, and predict.py's TSV of it."""
    root = tmp_path_factory.mktemp("predict")
    data = root / "test.tsv"
    data.write_text("index\tsentence\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(QUOTED) if t) + "9\t\n",
                    encoding="utf-8")
    out = root / "predictions.tsv"
    run_script("predict.py", f"--model_dir={exports['lstm'].folder}", f"--input_file={data}", f"--output_file={out}",
               "--threads=1", timeout=120)
    ids = [str(i) for i, t in enumerate(QUOTED) if t] + ["9"]
    return out, ids, [t for t in QUOTED if t] + [""]


def test_cli_tsv_output_round_trips_through_csv(exports, test_tsv_predictions):
    out, ids, texts = test_tsv_predictions
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["index", "label", "probability", "probability_neg", "probability_pos", "text"]
    assert [r["index"] for r in rows] == ids and [r["text"] for r in rows] == texts
    expected = Predictor(exports["lstm"].folder).predict(texts)
    assert [r["label"] for r in rows] == [p.label for p in expected]
    assert [float(r["probability_pos"]) for r in rows] == pytest.approx(
        [p.probabilities["pos"] for p in expected], abs=1e-6)


def test_cli_tsv_output_round_trips_through_pandas(test_tsv_predictions):
    pandas = pytest.importorskip("pandas")
    out, ids, texts = test_tsv_predictions
    frame = pandas.read_csv(out, sep="\t", keep_default_na=False, dtype=str)
    assert frame["index"].tolist() == ids and frame["text"].tolist() == texts


def test_cli_ids_in_jsonl(exports, tmp_path):
    data = tmp_path / "test.csv"
    data.write_text('id,review\nr1,"good, and ""fun"""\nr2,NA\n', encoding="utf-8")
    result = run_script("predict.py", f"--model_dir={exports['lstm'].folder}", f"--input_file={data}",
                        "--text_column=review", "--output_format=jsonl", "--threads=1", timeout=120)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["text"]) for r in rows] == [("r1", 'good, and "fun"'), ("r2", "NA")]
    assert list(rows[0]) == ["id", "label", "probability", "probabilities", "text"]


def test_cli_plain_text_lines_are_rows(exports, tmp_path):
    """--input_format=lines: every line is a row, blank lines and the first line included; texts as given."""
    lines = ["the movie was great", "", 'a "quoted"\ttab', "NA", "   ", "last line without a newline"]
    data = tmp_path / "sentences.txt"
    data.write_bytes(("\n".join(lines[:3]) + "\r\n" + "\n".join(lines[3:])).encode())
    folder = exports["bert"].folder
    result = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", "--input_format=lines",
                        "--threads=1", timeout=120)
    header, rows = read_tsv(result.stdout)
    assert header[-1] == "text" and [row[-1] for row in rows] == lines
    assert [row[0] for row in rows] == [p.label for p in Predictor(folder).predict(lines)]
    multiline = "two\nlines and a \"quote\""
    result = run_script("predict.py", f"--model_dir={folder}", "--threads=1", multiline, "NA", timeout=120)
    assert [row[-1] for row in read_tsv(result.stdout)[1]] == [multiline, "NA"]


def test_cli_errors_are_one_line(exports, tmp_path):
    folder = exports["bert"].folder
    run_folder = os.path.dirname(folder)
    result = run_script("predict.py", f"--model_dir={run_folder}", "good", check=False, timeout=120)
    assert result.returncode == 2 and len(error_lines(result)) == 1 and "Traceback" not in result.stderr
    assert "is a run folder, not an export folder: pass" in error_lines(result)[0]
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\ngood\t1\n")
    result = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", "--text_column=review",
                        check=False, timeout=120)
    assert result.returncode == 2 and "no column 'review'" in error_lines(result)[0]
    data.write_text("id\tsentence\n1\tgood\n2\n")
    result = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", "--text_column=sentence",
                        check=False, timeout=120)
    assert result.returncode == 2 and f"{data}:3: expected at least 2 columns, got 1" in error_lines(result)[0]
    for args, message in ((["--id_column=key"], "--id_column: no column 'key'"),
                          (["--input_format=lines", "--text_column=0"], "--text_column describe a table"),
                          (["--id_column=label"], "the id column is named 'label', as an output column")):
        data.write_text("sentence\tlabel\ngood\t1\n")
        result = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", *args, check=False,
                            timeout=120)
        assert result.returncode == 2 and len(error_lines(result)) == 1, result.stderr
        assert message in error_lines(result)[0], result.stderr
    data.write_bytes(b"good\n\xff bad\n")
    result = run_script("predict.py", f"--model_dir={folder}", f"--input_file={data}", "--input_format=lines",
                        check=False, timeout=120)
    assert result.returncode == 2 and f"{data}:2: not valid UTF-8" in error_lines(result)[0]


def test_batches_are_length_sorted_with_bounded_padding(exports):
    predictor = Predictor(exports["lstm"].folder, batch_size=3)
    lengths = [5, 1, 5, 5, 20, 1, 5, 6]
    batches = predictor.batches(lengths)
    assert [list(b) for b in batches] == [[1, 5], [0, 2, 3], [6, 7], [4]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    unbounded = Predictor(exports["lstm"].folder, batch_size=3, max_padding=100)
    assert [len(b) for b in unbounded.batches(lengths)] == [3, 3, 2]
    with pytest.raises(errors.UserError, match="max_padding must be at least 1"):
        Predictor(exports["lstm"].folder, max_padding=0.5)
