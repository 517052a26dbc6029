"""The transfer-set TSV: write, read back, and clear errors for malformed files."""
import numpy as np
import pytest

from bertdistill.distill import transfer_set
from bertdistill.data.data import DataFormatError

LABELS = ["0", "1"]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_round_trip(tmp_path):
    logits = np.array([[1.5, -2.25], [0.125, 3.0]], np.float32)
    path = write(tmp_path / "t.tsv", transfer_set.header(LABELS) +
                 transfer_set.format_rows(["a fine film", "[MASK] plot"], ["1", "0"], logits))
    assert (tmp_path / "t.tsv").read_text().splitlines()[0] == "sentence\tlabel\tlogit_0\tlogit_1"
    examples, read = transfer_set.read_transfer_set(path, LABELS)
    assert [(e.text_a, e.label) for e in examples] == [("a fine film", "1"), ("[MASK] plot", "0")]
    np.testing.assert_array_equal(read, logits)


@pytest.mark.parametrize("body, line, message", [
    ("sentence\tlabel\tlogit_0\n", 1, "expected header"),
    ("sentence\tlabel\tlogit_0\tlogit_1\ngood\t1\t0.5\n", 2, "expected 4 columns, found 3"),
    ("sentence\tlabel\tlogit_0\tlogit_1\nok\t1\t0\t1\n \t1\t0.5\t1\n", 3, "empty sentence"),
    ("sentence\tlabel\tlogit_0\tlogit_1\ngood\t7\t0.5\t1\n", 2, "unknown label '7'"),
    ("sentence\tlabel\tlogit_0\tlogit_1\ngood\t1\tx\t1\n", 2, "are not numbers"),
    ("sentence\tlabel\tlogit_0\tlogit_1\ngood\t1\tnan\t1\n", 2, "not finite"),
])
def test_malformed_files_name_file_and_line(tmp_path, body, line, message):
    path = write(tmp_path / "bad.tsv", body)
    with pytest.raises(DataFormatError, match=message) as error:
        transfer_set.read_transfer_set(path, LABELS)
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"sentence\tlabel\tlogit_0\tlogit_1\ngood\t1\t0\t1\nbad \xff\t0\t1\t0\n")
    with pytest.raises(DataFormatError, match=f"{path}:3: not valid UTF-8"):
        transfer_set.read_transfer_set(str(path), LABELS)
