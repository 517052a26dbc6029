"""Raw text -> label and probabilities with any export folder (teacher, TinyBERT, BiLSTM), through
ONNX Runtime (no TensorFlow).

    python predict.py --model_dir=outputs/teacher/export "a gorgeous , witty film" "dull"
    cat sentences.txt | python predict.py --model_dir=outputs/lstm_distil/export --output_format=jsonl
    python predict.py --model_dir=outputs/tinybert/export --input_file=../shared/data/sst2/dev.tsv \
        --text_column=sentence --output_file=dev_predictions.tsv --quantized --threads=2

Texts come from the arguments, else `--input_file` (a TSV/CSV column by header name or 0-based
index), else stdin (one text per line). Output: TSV (`label`, `probability`, one
`probability_<label>` column per label, `text`; tabs and newlines in the text become spaces) or
JSON lines (`label`, `probability`, `probabilities`, `text`), on stdout or in `--output_file`
(written under a temporary name and renamed when complete). Files get a progress line on stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found": not needed here

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from typing import TextIO  # noqa: E402

from absl import app, flags  # noqa: E402

from bertdistill import errors, validation  # noqa: E402
from bertdistill.data import DataFormatError, split_lines  # noqa: E402
from bertdistill.errors import FlagError, MissingFileError  # noqa: E402
from bertdistill.predictor import DEFAULT_BATCH_SIZE, Prediction, Predictor  # noqa: E402
from bertdistill.files import atomic_output  # noqa: E402

flags.DEFINE_string("model_dir", None, "An export folder (bert_finetune, tinybert or distil_lstm: <output_dir>/export).")
flags.DEFINE_string("input_file", None, "A TSV/CSV file of texts (see --text_column); default: the arguments, "
                    "else stdin, one text per line.")
flags.DEFINE_string("text_column", None, "--input_file's text column: a header name or a 0-based index (default: "
                    "the only column, else 'sentence' or 'text').")
flags.DEFINE_bool("has_header", True, "--input_file starts with a header line.")
flags.DEFINE_string("delimiter", None, "--input_file's delimiter (default: ',' for .csv, else a tab).")
flags.DEFINE_string("output_file", None, "Write here instead of stdout (atomically).")
flags.DEFINE_enum("output_format", "tsv", ["tsv", "jsonl"], "TSV with a header, or one JSON object per line.")
flags.DEFINE_bool("quantized", None, "Use the INT8 model (model.int8.onnx); --noquantized: the float32 one "
                  "(model.onnx); default: the one the export's INT8 gate recommends (model.onnx without a gate).")
flags.DEFINE_integer("threads", 0, "ONNX Runtime intra-op threads (0: all cores).", lower_bound=0)
flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Texts per ONNX Runtime call (texts are sorted by length "
                     "first).", lower_bound=1)
FLAGS = flags.FLAGS

CHUNK = 2048  # texts predicted (and written) at a time: bounded memory for the outputs, progress between chunks
DEFAULT_COLUMNS = ("sentence", "text")


def column_index(path: str, header: list[str] | None, column: str | None) -> int:
    """The 0-based index of `column` (a header name or an index) in `path`."""
    if column is None:
        if header is None or len(header) == 1:
            return 0
        for name in DEFAULT_COLUMNS:
            if name in header:
                return header.index(name)
        raise FlagError("text_column", f"{errors.shorten(path)} has columns {errors.shorten(header, 120)}: "
                                       "pass --text_column=NAME_OR_INDEX")
    if header is not None and column in header:
        return header.index(column)
    if column.strip().isdigit():
        index = int(column)
        if header is not None and index >= len(header):
            raise FlagError("text_column", f"--text_column={column}: {errors.shorten(path)} has only {len(header)} "
                                           f"columns {errors.shorten(header, 120)}")
        return index
    if header is None:
        raise FlagError("text_column", f"--text_column={errors.shorten(column, 60)} is a name but --nohas_header: "
                                       "pass a 0-based index")
    raise FlagError("text_column", f"no column {errors.shorten(repr(column), 60)} in {errors.shorten(path)}'s header "
                                   f"{errors.shorten(header, 120)}")


def read_texts(path: str, column: str | None, has_header: bool, delimiter: str | None) -> list[str]:
    """The texts of one column of a TSV/CSV file; a malformed row is an error naming `path:line`."""
    if not os.path.exists(path):
        raise MissingFileError(f"--input_file={errors.shorten(path)} does not exist")
    if os.path.isdir(path):
        raise FlagError("input_file", f"--input_file={errors.shorten(path)} is a folder; expected a TSV/CSV file")
    delimiter = delimiter or ("," if path.lower().endswith(".csv") else "\t")
    lines = split_lines(path, delimiter, skip_header=False, header=None)
    header, index, texts = None, None, []
    for line_no, fields in lines:
        if isinstance(fields, str):  # not UTF-8: the reason
            raise DataFormatError(path, line_no, fields)
        if index is None:
            header = [h.strip() for h in fields] if has_header else None
            index = column_index(path, header, column)
            if has_header:
                continue
        if len(fields) <= index:
            raise DataFormatError(path, line_no, f"expected at least {index + 1} columns, got {len(fields)}")
        texts.append(fields[index].strip())
    return texts


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


def tsv_header(labels: Sequence[str]) -> str:
    return "\t".join(["label", "probability", *(f"probability_{label}" for label in labels), "text"]) + "\n"


def format_row(prediction: Prediction, text: str, output_format: str) -> str:
    if output_format == "jsonl":
        return json.dumps({**prediction.to_dict(), "text": text}, ensure_ascii=False) + "\n"
    clean = " ".join(text.replace("\t", " ").splitlines()) if ("\t" in text or "\n" in text or "\r" in text) else text
    return "\t".join([prediction.label, f"{prediction.probability:.6f}",
                      *(f"{p:.6f}" for p in prediction.probabilities.values()), clean]) + "\n"


def predict_to(out: TextIO, predictor: Predictor, texts: Sequence[str], output_format: str,
               progress: Progress) -> None:
    if output_format == "tsv":
        out.write(tsv_header(predictor.labels))
    progress.update(0)
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        for prediction, text in zip(predictor.predict(chunk), chunk):
            out.write(format_row(prediction, text, output_format))
        out.flush()
        progress.update(start + len(chunk))


def stdin_texts() -> Iterator[str]:
    for line in sys.stdin:
        yield line.rstrip("\r\n")


def main(argv):
    texts = argv[1:]
    model_dir = validation.require("model_dir", FLAGS.model_dir)
    if texts and FLAGS.input_file:
        raise app.UsageError("pass texts as arguments or --input_file, not both")
    if FLAGS.output_file:
        validation.writable_output("output_file", FLAGS.output_file, folder=False)
        if FLAGS.input_file and os.path.abspath(FLAGS.output_file) == os.path.abspath(FLAGS.input_file):
            raise FlagError("output_file", "--output_file is --input_file: choose another output path")
        validation.clean_file_debris(FLAGS.output_file)
    predictor = Predictor(model_dir, quantized=FLAGS.quantized, threads=FLAGS.threads, batch_size=FLAGS.batch_size)
    if FLAGS.input_file:
        texts = read_texts(FLAGS.input_file, FLAGS.text_column, FLAGS.has_header, FLAGS.delimiter)
    elif not texts:
        if sys.stdin is None or sys.stdin.isatty():
            raise app.UsageError("no texts: pass them as arguments, with --input_file, or on stdin (one per line)")
        texts = list(stdin_texts())
    progress = Progress(len(texts), enabled=bool(FLAGS.input_file))
    if FLAGS.output_file:
        with atomic_output(FLAGS.output_file) as out:
            predict_to(out, predictor, texts, FLAGS.output_format, progress)
    else:
        predict_to(sys.stdout, predictor, texts, FLAGS.output_format, progress)


if __name__ == "__main__":
    errors.run(main)
