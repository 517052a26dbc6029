"""Data processors: SST-2 TSV and tfds, user TSV/CSV, validation errors with file:line, skip mode."""
import pytest

from bertdistill.data import data
from tests.conftest import SHARED

SST2 = SHARED / "data" / "sst2"


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.fixture
def sst2_dir(tmp_path):
    write(tmp_path / "train.tsv", 'sentence\tlabel\nhide new secretions \t0\nit \'s a "charming" journey \t1\n')
    write(tmp_path / "dev.tsv", "sentence\tlabel\nunflinchingly bleak \t0\n")
    write(tmp_path / "test.tsv", "index\tsentence\n0\tuneasy mishmash .\n1\ta poor imitation .\n")
    return tmp_path


def test_sst2_tsv(sst2_dir):
    processor = data.get_processor("SST-2")
    train = processor.get_train_examples(str(sst2_dir))
    assert train == [data.InputExample("train-0", "hide new secretions", None, "0"),
                     data.InputExample("train-1", 'it \'s a "charming" journey', None, "1")]
    assert processor.get_dev_examples(str(sst2_dir))[0].label == "0"
    test = processor.get_test_examples(str(sst2_dir))
    assert [(e.guid, e.text_a, e.label) for e in test] == [("test-0", "uneasy mishmash .", None),
                                                           ("test-1", "a poor imitation .", None)]
    assert processor.get_labels() == ["0", "1"]


@pytest.mark.parametrize("body, reason", [
    ("sentence\tlabel\ngood film\t1\ttoo many\n", r"train\.tsv:2: expected 2 columns, got 3"),
    ("sentence\tlabel\ngood film\t1\n  \t0\n", r"train\.tsv:3: empty text"),
    ("sentence\tlabel\ngood film\t1\nbad film\t2\n", r"train\.tsv:3: unknown label '2'"),
    (b"sentence\tlabel\ngood film\t1\nbad \xff film\t0\n", r"train\.tsv:3: not valid UTF-8 at byte 4"),
    ("text\tlabel\ngood film\t1\n", r"train\.tsv:1: expected header \['sentence', 'label'\]"),
])
def test_malformed_rows_name_file_and_line(tmp_path, body, reason):
    write(tmp_path / "train.tsv", body)
    with pytest.raises(data.DataFormatError, match=reason):
        data.Sst2Processor().get_train_examples(str(tmp_path))


def test_skip_mode_skips_and_counts(tmp_path):
    path = write(tmp_path / "train.tsv", b"sentence\tlabel\ngood\t1\nbad\t7\n\t0\nfine\t0\nx\xfe\t1\n")
    processor = data.Sst2Processor(on_error="skip")
    examples = processor.get_train_examples(str(tmp_path))
    assert [e.text_a for e in examples] == ["good", "fine"]
    assert processor.skipped == {str(path): 3}


def test_missing_file_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv .*GLUE SST-2 layout"):
        data.Sst2Processor().get_dev_examples(str(tmp_path))


def test_tfds_path_without_network(monkeypatch):
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds

    rows = {"sentence": np.array([b"a fine film", b"dull"]), "label": np.array([1, -1]), "idx": np.array([7, 8])}
    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return tf.data.Dataset.from_tensor_slices(rows)

    monkeypatch.setattr(tfds, "load", fake_load)
    examples = data.Sst2Processor().get_dev_examples(None)
    assert calls == [("glue/sst2", "validation")]
    assert examples == [data.InputExample("dev-7", "a fine film", None, "1"), data.InputExample("dev-8", "dull")]


def test_tfds_failure_says_to_pass_data_dir(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(name, split):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError, match="pass data_dir .*GLUE SST-2"):
        data.Sst2Processor().get_train_examples("")


def test_user_tsv_pairs_by_header_name(tmp_path):
    write(tmp_path / "train.tsv", "id\tpremise\thypothesis\tgold\n1\ta man plays\ta person plays\tyes\n")
    write(tmp_path / "test.tsv", "id\tpremise\thypothesis\n1\ta man\ta woman\n")
    processor = data.get_processor("tsv", labels=["yes", "no"], text_a_column="premise",
                                   text_b_column="hypothesis", label_column="gold")
    assert processor.get_train_examples(str(tmp_path)) == [
        data.InputExample("train-0", "a man plays", "a person plays", "yes")]
    assert processor.get_test_examples(str(tmp_path))[0].label is None


def test_user_csv_with_quotes_and_indices(tmp_path):
    write(tmp_path / "dev.csv", 'neg,"bad, really bad"\npos,"great ""fun"""\n')
    processor = data.get_processor("csv", labels=["neg", "pos"], text_a_column=1, label_column=0, has_header=False)
    examples = processor.get_dev_examples(str(tmp_path))
    assert [(e.text_a, e.label) for e in examples] == [("bad, really bad", "neg"), ('great "fun"', "pos")]
    write(tmp_path / "train.csv", "text,label\nok,pos\n")
    named = data.get_processor("csv", labels=["neg", "pos"], text_a_column="sentence", label_column="label")
    with pytest.raises(data.DataFormatError, match=r"train\.csv:1: no column 'sentence'"):
        named.get_train_examples(str(tmp_path))


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'mnli'; known tasks: \['csv', 'sst-2', 'sst2', 'tsv'\]"):
        data.get_processor("mnli")


@pytest.mark.skipif(not SST2.exists(), reason="../shared/data/sst2 is not present")
def test_real_sst2_files():
    processor = data.Sst2Processor()
    counts = [len(f(str(SST2))) for f in (processor.get_train_examples, processor.get_dev_examples,
                                          processor.get_test_examples)]
    assert counts == [67349, 872, 1821]
