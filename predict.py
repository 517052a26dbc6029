"""Raw text -> label and probabilities with any export folder (teacher, TinyBERT, BiLSTM), through
ONNX Runtime (no TensorFlow).

    python predict.py --model_dir=outputs/teacher/export "a gorgeous , witty film" "dull"
    cat sentences.txt | python predict.py --model_dir=outputs/lstm_distil/export --output_format=jsonl
    python predict.py --model_dir=outputs/tinybert/export --input_file=../shared/data/sst2/dev.tsv \
        --text_column=sentence --output_file=dev_predictions.tsv --quantized --threads=2
    python predict.py --model_dir=outputs/teacher/export --input_file=sentences.txt --input_format=lines
    python predict.py --model_dir=outputs/pairs/export --input_file=dev.tsv --text_column=premise \
        --text_b_column=hypothesis
    printf 'a man sleeps\\tsomeone rests\\n' | python predict.py --model_dir=outputs/pairs/export

Texts come from the arguments, else `--input_file`, else stdin (one text per line). An input file
is a TSV/CSV table (`--input_format=table`, the default: a text column by header name or 0-based
index, and an id column such as SST-2 test.tsv's `index` when there is one) or plain text
(`--input_format=lines`: one text per line, no header, every line a row, blank lines included, so
output row i is input line i).

A model that reads sentence pairs (its export_info's `text_inputs`) takes two texts per row: a
table's `--text_column` and `--text_b_column` (by default the columns it was trained on, when the
table has them), and elsewhere (arguments, plain-text lines, stdin) one `text<TAB>text_b` pair
per row, split at its only tab; a row without exactly one tab is refused with its line number.
A single-text model refuses `--text_b_column` (and reads a tab as part of its text). Output: TSV quoted by the csv module's rules (an id column if the
input has one, `label`, `probability`, one `probability_<label>` column per label, `text` as given,
and `text_b` for pairs) or JSON lines (the id, `label`, `probability`, `probabilities`, `text`,
`text_b`), on stdout or in
`--output_file` (written under a temporary name and renamed when complete). Files get a progress
line on stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found": not needed here

import csv  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import BinaryIO, TextIO  # noqa: E402

from absl import app, flags  # noqa: E402

from bertdistill import errors  # noqa: E402
from bertdistill.cli import entry  # noqa: E402

from bertdistill.training import validation
from bertdistill.data.data import DataFormatError, split_lines  # noqa: E402
from bertdistill.errors import FlagError, MissingFileError  # noqa: E402
from bertdistill.export_format import COLUMNS, TEXT_PAIR, read_export_info, text_inputs  # noqa: E402
from bertdistill.serving.predictor import Predictor  # noqa: E402
from bertdistill.files import atomic_output  # noqa: E402
from bertdistill.cli.shared_flags import define_flag  # noqa: E402

define_flag("model_dir")
flags.DEFINE_string("input_file", None, "A file of texts (see --input_format); default: the arguments, else stdin, "
                    "one text per line.")
flags.DEFINE_enum("input_format", "table", ["table", "lines"], "--input_file is a TSV/CSV table (see --text_column, "
                  "--id_column, --has_header, --delimiter), or plain text: one text per line, no header, every line "
                  "a row (blank lines too).")
flags.DEFINE_string("text_column", None, "A table's text column: a header name or a 0-based index (default: the "
                    "only column, else 'sentence' or 'text').")
define_flag("text_b_column", help="A table's second text column, for a model that reads sentence pairs "
            "(default: the column it was trained on): a header name or a 0-based index.")
flags.DEFINE_string("id_column", None, "A table's id column, copied to the output: a header name or a 0-based index "
                    "(default: a column named 'index', 'id' or 'idx', if any).")
define_flag("has_header", help="The table starts with a header line.")
define_flag("delimiter", help="The table's delimiter (default: ',' for .csv, else a tab).")
flags.DEFINE_string("output_file", None, "Write here instead of stdout (atomically).")
flags.DEFINE_enum("output_format", "tsv", ["tsv", "jsonl"], "TSV with a header, or one JSON object per line.")
define_flag("quantized")
define_flag("threads")
define_flag("batch_size", help="Texts per ONNX Runtime call (texts are sorted by length first).")
FLAGS = flags.FLAGS

CHUNK = 2048  # texts predicted (and written) at a time: bounded memory for the outputs, progress between chunks
DEFAULT_COLUMNS = ("sentence", "text")
DEFAULT_ID_COLUMNS = ("index", "id", "idx")
TABLE_FLAGS = ("text_column", "text_b_column", "id_column", "has_header", "delimiter")
OUTPUT_KEYS = ("label", "probability", "probabilities", "text", "text_b")


@dataclasses.dataclass
class Inputs:
    """The texts to predict (and their `texts_b` for pairs) and, when the input has an id column,
    its name and each text's id."""

    texts: list[str]
    texts_b: list[str] | None = None
    ids: list[str] | None = None
    id_name: str | None = None


def column_index(path: str, header: list[str] | None, column: str, flag: str) -> int:
    """The 0-based index of `column` (a header name or an index, given by --`flag`) in `path`."""
    if header is not None and column in header:
        return header.index(column)
    if column.strip().isdigit():
        index = int(column)
        if header is not None and index >= len(header):
            raise FlagError(flag, f"--{flag}={column}: {errors.shorten(path)} has only {len(header)} "
                                  f"columns {errors.shorten(header, 120)}")
        return index
    if header is None:
        raise FlagError(flag, f"--{flag}={errors.shorten(column, 60)} is a name but --nohas_header: "
                              "pass a 0-based index")
    raise FlagError(flag, f"no column {errors.shorten(repr(column), 60)} in {errors.shorten(path)}'s header "
                          f"{errors.shorten(header, 120)}")


def text_column_index(path: str, header: list[str] | None, column: str | None, trained: str | None) -> int:
    """The text column: `column` if given, else the only column, else the column the model was
    trained on (`trained`), 'sentence' or 'text'."""
    if column is not None:
        return column_index(path, header, column, "text_column")
    if header is None or len(header) == 1:
        return 0
    for name in (trained, *DEFAULT_COLUMNS):
        if name in header:
            return header.index(name)
    raise FlagError("text_column", f"{errors.shorten(path)} has columns {errors.shorten(header, 120)}: "
                                   "pass --text_column=NAME_OR_INDEX")


def text_b_column_index(path: str, header: list[str] | None, column: str | None, trained: str | None) -> int:
    """The second text column of a pair model: `column` if given, else the one it was trained on."""
    if column is not None:
        return column_index(path, header, column, "text_b_column")
    if header is not None and trained in header:
        return header.index(trained)
    raise FlagError("text_b_column", f"the model reads sentence pairs: pass --text_b_column=NAME_OR_INDEX, the "
                                     f"second text's column of {errors.shorten(path)}"
                                     + (f" (columns {errors.shorten(header, 120)})" if header else ""))


def id_column_index(path: str, header: list[str] | None, column: str | None) -> int | None:
    """The id column: `column` if given, else one named as in DEFAULT_ID_COLUMNS, else None."""
    if column is not None:
        return column_index(path, header, column, "id_column")
    return next((header.index(name) for name in DEFAULT_ID_COLUMNS if header and name in header), None)


def read_table(path: str, column: str | None, id_column: str | None, has_header: bool,
               delimiter: str | None, *, column_b: str | None = None, pairs: bool = False,
               trained: dict | None = None) -> Inputs:
    """The texts (pairs: and `texts_b`; and ids) of a TSV/CSV file, as given; a malformed row is an
    error naming `path:line`. `trained`: the columns the model was trained on ({"text": ...,
    "text_b": ...}), the defaults of `column` and `column_b`.

    Tab-separated files are split without quoting (as GLUE's TSV files are written), others by csv rules."""
    check_input_file(path)
    delimiter = delimiter or ("," if path.lower().endswith(".csv") else "\t")
    trained = {name: value for name, value in (trained or {}).items() if isinstance(value, str)}
    inputs, index, id_index = Inputs([], [] if pairs else None), None, None
    for line_no, fields in split_lines(path, delimiter, skip_header=False, header=None):
        if isinstance(fields, str):  # not UTF-8: the reason
            raise DataFormatError(path, line_no, fields)
        if index is None:
            header = [h.strip() for h in fields] if has_header else None
            index = text_column_index(path, header, column, trained.get("text"))
            index_b = text_b_column_index(path, header, column_b, trained.get("text_b")) if pairs else -1
            id_index = id_column_index(path, header, id_column)
            if id_index is not None:
                inputs.ids, inputs.id_name = [], header[id_index] if header else "id"
                if inputs.id_name in OUTPUT_KEYS or inputs.id_name.startswith("probability_"):
                    raise FlagError("id_column", f"the id column is named {inputs.id_name!r}, as an output column: "
                                                 f"rename it in {errors.shorten(path)}")
            if has_header:
                continue
        width = max(index, index_b, -1 if id_index is None else id_index) + 1
        if len(fields) < width:
            raise DataFormatError(path, line_no, f"expected at least {width} columns, got {len(fields)}")
        inputs.texts.append(fields[index])
        if pairs:
            inputs.texts_b.append(fields[index_b])
        if id_index is not None:
            inputs.ids.append(fields[id_index])
    return inputs


def read_lines(path: str) -> list[str]:
    """Every line of a plain-text file (blank lines too), without its line break."""
    check_input_file(path)
    with open(path, "rb") as f:
        return decode_lines(f, path)


def decode_lines(stream: BinaryIO, name: str) -> list[str]:
    """Every line of `stream` as text, without its line break (and the first without a BOM);
    a line that is not UTF-8 is a `DataFormatError` naming `name` and the line."""
    texts = []
    for line_no, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise DataFormatError(name, line_no, f"not valid UTF-8 at byte {e.start} ({e.reason})") from None
        texts.append(line.removeprefix("\ufeff") if line_no == 1 else line)
    return texts


def rows_to_inputs(rows: Sequence[str], pairs: bool, source: str) -> Inputs:
    """One text per row, or for a pair model one `text<TAB>text_b` pair per row (a row without
    exactly one tab is a `DataFormatError` naming `source` and its 1-based row number)."""
    if not pairs:
        return Inputs(list(rows))
    inputs = Inputs([], [])
    for number, row in enumerate(rows, start=1):
        fields = row.split("\t")
        if len(fields) != 2:
            raise DataFormatError(source, number, f"expected a sentence pair, text<TAB>text_b (the model reads "
                                                  f"pairs), got {len(fields) - 1} tabs")
        inputs.texts.append(fields[0])
        inputs.texts_b.append(fields[1])
    return inputs


def check_input_file(path: str) -> None:
    if not os.path.exists(path):
        raise MissingFileError(f"--input_file={errors.shorten(path)} does not exist")
    if os.path.isdir(path):
        raise FlagError("input_file", f"--input_file={errors.shorten(path)} is a folder; expected a file")


class Progress:
    """Texts done on stderr: redrawn in place on a terminal, else a line every `every` seconds and at the end."""

    def __init__(self, total: int, enabled: bool, every: float = 10.0, stream: TextIO = sys.stderr):
        self.total, self.enabled, self.every, self.stream = total, enabled, every, stream
        self.start = self.last = time.monotonic()
        self.tty = stream.isatty()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        final = done >= self.total
        if not (self.tty or final or now - self.last >= self.every):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate else 0
        line = (f"predict: {done}/{self.total} texts ({100 * done / max(self.total, 1):.0f}%), {rate:.0f} texts/s, "
                + (f"{elapsed:.1f} s" if final else f"ETA {int(eta) // 60:02d}:{int(eta) % 60:02d}"))
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


def tsv_header(labels: Sequence[str], id_name: str | None, pairs: bool) -> list[str]:
    return [*([id_name] if id_name else []), "label", "probability", *(f"probability_{label}" for label in labels),
            "text", *(["text_b"] if pairs else [])]


def predict_to(out: TextIO, predictor: Predictor, inputs: Inputs, output_format: str, progress: Progress) -> None:
    """Writes one row (TSV, with a header) or one JSON line per text (or pair), in input order."""
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    pairs = inputs.texts_b is not None
    if output_format == "tsv":
        writer.writerow(tsv_header(predictor.labels, inputs.id_name, pairs))
    progress.update(0)
    for start in range(0, len(inputs.texts), CHUNK):
        texts = inputs.texts[start:start + CHUNK]
        texts_b = inputs.texts_b[start:start + CHUNK] if pairs else None
        ids = inputs.ids[start:start + CHUNK] if inputs.ids is not None else [None] * len(texts)
        given = [{"text": text, **({"text_b": texts_b[i]} if pairs else {})} for i, text in enumerate(texts)]
        for prediction, text, id_ in zip(predictor.predict(texts, texts_b), given, ids):
            key = {inputs.id_name: id_} if inputs.id_name else {}
            if output_format == "jsonl":
                out.write(json.dumps({**key, **prediction.to_dict(), **text}, ensure_ascii=False) + "\n")
            else:
                writer.writerow([*key.values(), prediction.label, f"{prediction.probability:.6f}",
                                 *(f"{p:.6f}" for p in prediction.probabilities.values()), *text.values()])
        out.flush()
        progress.update(start + len(texts))


def main(argv):
    texts = argv[1:]
    model_dir = validation.require("model_dir", FLAGS.model_dir)
    if texts and FLAGS.input_file:
        raise app.UsageError("pass texts as arguments or --input_file, not both")
    table_flags = [f"--{name}" for name in TABLE_FLAGS if FLAGS[name].present]
    if table_flags and not (FLAGS.input_file and FLAGS.input_format == "table"):
        raise FlagError("input_format", f"{', '.join(table_flags)} describe a table: they need --input_file "
                                        "with --input_format=table")
    if FLAGS.output_file:
        validation.check_outputs({"output_file": FLAGS.output_file}, [FLAGS.input_file, model_dir])
        validation.writable_output("output_file", FLAGS.output_file, folder=False)
        validation.clean_file_debris(FLAGS.output_file)
    if FLAGS.input_file and FLAGS.input_format == "table":
        info = read_export_info(model_dir)
        pairs = text_inputs(info) == TEXT_PAIR
        if FLAGS.text_b_column is not None and not pairs:
            raise FlagError("text_b_column", f"--model_dir={errors.shorten(model_dir)} reads single texts: "
                                             "--text_b_column is for a model that reads sentence pairs")
        inputs = read_table(FLAGS.input_file, FLAGS.text_column, FLAGS.id_column, FLAGS.has_header, FLAGS.delimiter,
                            column_b=FLAGS.text_b_column, pairs=pairs, trained=info.get(COLUMNS))
    else:
        if FLAGS.input_file:
            rows, source = read_lines(FLAGS.input_file), FLAGS.input_file
        elif texts:
            rows, source = texts, "argument"
        elif sys.stdin is None or sys.stdin.isatty():
            raise app.UsageError("no texts: pass them as arguments, with --input_file, or on stdin (one per line)")
        else:
            rows, source = decode_lines(sys.stdin.buffer, "<stdin>"), "<stdin>"
        inputs = rows_to_inputs(rows, text_inputs(read_export_info(model_dir)) == TEXT_PAIR, source)
    predictor = Predictor(model_dir, quantized=FLAGS.quantized, threads=FLAGS.threads, batch_size=FLAGS.batch_size)
    progress = Progress(len(inputs.texts), enabled=bool(FLAGS.input_file))
    if FLAGS.output_file:
        with atomic_output(FLAGS.output_file) as out:
            predict_to(out, predictor, inputs, FLAGS.output_format, progress)
    else:
        predict_to(sys.stdout, predictor, inputs, FLAGS.output_format, progress)


if __name__ == "__main__":
    entry.run(main)
