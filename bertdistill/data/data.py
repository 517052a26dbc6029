"""Examples for sentence classification, run_classifier style.

`InputExample` rows come from a `DataProcessor` chosen by task name: SST-2 from the GLUE TSV
files or from tfds `glue/sst2`, or a user's own TSV/CSV. Every row is validated as it is read;
a bad row raises `DataFormatError` naming the file and line, or, with `on_error="skip"`, is
skipped, counted in `processor.skipped` and reported once per file.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import os
from collections.abc import Iterator, Sequence

from absl import logging

from bertdistill.configs import DataConfig
from bertdistill.export_format import COLUMNS, SINGLE_TEXT, TEXT_INPUTS, TEXT_PAIR
from bertdistill.errors import (ConfigError, ConfigFieldError, DataError, DataUnavailableError, FlagError,
                                MissingFileError, field, shorten)


@dataclasses.dataclass(frozen=True)
class InputExample:
    """One example: `text_b` is set for sentence pairs, `label` is None for unlabeled test rows."""

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | None = None


class DataFormatError(DataError):
    """A malformed input row (a `UserError`, still a ValueError); the message starts with `path:line: `."""

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


ON_ERROR = ("raise", "skip")
REPORTED_BAD_ROWS = 3  # bad rows quoted in the skip-mode warning


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


class BadRows:
    """The bad rows of one file: raised at once (`on_error="raise"`), or (`"skip"`) counted,
    reported once per file (count and the first few, `path:line: reason`) and recorded in
    `skipped[path]`. A file whose every row is bad is refused in both modes (nothing to learn from).
    Every reader of rows (data processors, transfer sets) uses it, so `--skip_bad_rows` works alike."""

    def __init__(self, path: str, on_error: str = "raise"):
        self.path, self.on_error = path, check_on_error(on_error)
        self.problems: list[str] = []

    def add(self, error: DataFormatError) -> None:
        if self.on_error == "raise":
            raise error
        self.problems.append(str(error))

    def finish(self, good: int, skipped: dict[str, int] | None = None) -> None:
        if not self.problems:
            return
        first = "; ".join(shorten(p) for p in self.problems[:REPORTED_BAD_ROWS])
        if skipped is not None:
            skipped[self.path] = len(self.problems)
        if not good:
            raise DataError(f"{shorten(self.path)}: no valid rows: all {len(self.problems)} rows are bad "
                            f"(first: {first}); fix the file")
        logging.warning("Skipped %d bad rows of %s (%d kept); first: %s", len(self.problems), self.path, good, first)


@dataclasses.dataclass(frozen=True)
class _Columns:
    """Where the fields of a row are, by index, after the header has been checked."""

    count: int
    text_a: int
    text_b: int | None
    label: int | None
    guid: int | None = None


class DataProcessor(abc.ABC):
    """Base class: reads train/dev/test examples and knows the label list."""

    def __init__(self, on_error: str = "raise"):
        self.on_error = check_on_error(on_error)
        self.skipped: dict[str, int] = {}

    @abc.abstractmethod
    def get_train_examples(self, data_dir: str | None) -> list[InputExample]: ...

    @abc.abstractmethod
    def get_dev_examples(self, data_dir: str | None) -> list[InputExample]: ...

    @abc.abstractmethod
    def get_test_examples(self, data_dir: str | None) -> list[InputExample]: ...

    @abc.abstractmethod
    def get_labels(self) -> list[str]: ...

    @abc.abstractmethod
    def columns(self) -> dict[str, str | int]:
        """Where the task's fields are: {"text": column, "label": column} and "text_b" for pairs."""

    @property
    def text_inputs(self) -> tuple[str, ...]:
        """The texts of one example: `export_format.SINGLE_TEXT` or `TEXT_PAIR`."""
        return TEXT_PAIR if "text_b" in self.columns() else SINGLE_TEXT

    def input_record(self) -> dict:
        """What a model of this task reads, for export_info (keys in `bertdistill.export_format`)."""
        return {TEXT_INPUTS: list(self.text_inputs), COLUMNS: self.columns(), "labels": self.get_labels()}

    def _read_rows(self, path: str, delimiter: str, header: Sequence[str] | None, columns: _Columns,
                   split: str, labeled: bool) -> list[InputExample]:
        """Reads and validates a delimited file; one example per valid row."""
        if not os.path.isfile(path):
            raise MissingFileError(f"data file not found: {path}")
        labels = set(self.get_labels())
        examples, bad = [], BadRows(path, self.on_error)
        for line_no, fields in split_lines(path, delimiter, skip_header=header is not None, header=header):
            try:
                examples.append(self._to_example(fields, columns, labels, labeled, split, len(examples)))
            except ValueError as e:
                bad.add(DataFormatError(path, line_no, str(e)))
        bad.finish(len(examples), self.skipped)
        return examples

    @staticmethod
    def _to_example(fields: list[str] | str, columns: _Columns, labels: set[str], labeled: bool,
                    split: str, index: int) -> InputExample:
        if isinstance(fields, str):  # undecodable line: the reason
            raise ValueError(fields)
        if len(fields) != columns.count:
            raise ValueError(f"expected {columns.count} columns, got {len(fields)}")
        text_a = fields[columns.text_a].strip()
        text_b = fields[columns.text_b].strip() if columns.text_b is not None else None
        if not text_a or (columns.text_b is not None and not text_b):
            raise ValueError("empty text")
        label = fields[columns.label].strip() if labeled and columns.label is not None else None
        if label is not None and label not in labels:
            raise ValueError(f"unknown label {shorten(repr(label))}; expected one of {sorted(labels)}")
        guid = f"{split}-{fields[columns.guid].strip() if columns.guid is not None else index}"
        return InputExample(guid=guid, text_a=text_a, text_b=text_b, label=label)


def split_lines(path: str, delimiter: str, skip_header: bool,
                 header: Sequence[str] | None) -> Iterator[tuple[int, list[str] | str]]:
    """Yields (1-based line number, fields) per non-empty data line, or (line, reason) when the
    line is not UTF-8. Fields are split without quoting (GLUE TSV) for tabs, csv rules otherwise."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                if line_no == 1 and skip_header:
                    raise DataFormatError(path, 1, f"header is not valid UTF-8 ({e.reason})") from None
                yield line_no, f"not valid UTF-8 at byte {e.start} ({e.reason})"
                continue
            if line_no == 1 and line.startswith("\ufeff"):
                line = line[1:]
            fields = (line.split(delimiter) if delimiter == "\t"
                      else next(csv.reader([line], delimiter=delimiter), []))
            if line_no == 1 and skip_header:
                if [h.strip() for h in fields] != list(header):
                    raise DataFormatError(path, 1, f"expected header {list(header)}, got {shorten(fields)}")
                continue
            if line.strip():
                yield line_no, fields


class Sst2Processor(DataProcessor):
    """GLUE SST-2: `train.tsv`/`dev.tsv` (`sentence\\tlabel`), `test.tsv` (`index\\tsentence`).

    With no `data_dir`, reads tfds `glue/sst2` (downloading it if tfds can).
    """

    _TRAIN = _Columns(count=2, text_a=0, text_b=None, label=1)
    _TEST = _Columns(count=2, text_a=1, text_b=None, label=None, guid=0)
    _TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}

    def get_labels(self) -> list[str]:
        return ["0", "1"]

    def columns(self) -> dict[str, str | int]:
        return {"text": "sentence", "label": "label"}

    def get_train_examples(self, data_dir):
        return self._examples(data_dir, "train")

    def get_dev_examples(self, data_dir):
        return self._examples(data_dir, "dev")

    def get_test_examples(self, data_dir):
        return self._examples(data_dir, "test")

    def _examples(self, data_dir: str | None, split: str) -> list[InputExample]:
        if not data_dir:
            return self._tfds_examples(split)
        path = os.path.join(data_dir, f"{split}.tsv")
        if not os.path.isfile(path):
            raise MissingFileError(f"data file not found: {path} (expected the GLUE SST-2 layout: "
                                   f"train.tsv, dev.tsv, test.tsv): check {field('data_dir')}")
        if split == "test":
            return self._read_rows(path, "\t", ["index", "sentence"], self._TEST, split, labeled=False)
        return self._read_rows(path, "\t", ["sentence", "label"], self._TRAIN, split, labeled=True)

    def _tfds_examples(self, split: str) -> list[InputExample]:
        import tensorflow_datasets as tfds

        try:
            dataset = tfds.load("glue/sst2", split=self._TFDS_SPLITS[split])
        except Exception as e:  # tfds raises many kinds when it cannot download or find the data
            raise DataUnavailableError(
                f"could not load tfds glue/sst2 ({type(e).__name__}: {shorten(e)}). Without internet, pass "
                f"{field('data_dir')} with a folder holding the GLUE SST-2 train.tsv, dev.tsv and test.tsv") from e
        examples = []
        for i, row in enumerate(tfds.as_numpy(dataset)):
            label = int(row["label"])
            examples.append(InputExample(guid=f"{split}-{int(row.get('idx', i))}",
                                         text_a=row["sentence"].decode("utf-8").strip(),
                                         label=None if label < 0 else str(label)))
        return examples


class TextClassificationProcessor(DataProcessor):
    """A user's own TSV/CSV files: `train`, `dev`, `test` + extension in `data_dir`.

    Columns are header names (or 0-based indices with `has_header=False`); `text_b_column`
    makes sentence pairs; test files may lack the label column.
    """

    def __init__(self, labels: Sequence[str], text_a_column: str | int, label_column: str | int | None,
                 text_b_column: str | int | None = None, extension: str = "tsv", delimiter: str | None = None,
                 has_header: bool = True, on_error: str = "raise"):
        super().__init__(on_error)
        if not labels:
            raise ConfigError("labels must not be empty")
        self.labels = [str(label) for label in labels]
        self.text_a_column, self.text_b_column, self.label_column = text_a_column, text_b_column, label_column
        self.extension = extension
        self.delimiter = delimiter or ("\t" if extension == "tsv" else ",")
        self.has_header = has_header

    def get_labels(self) -> list[str]:
        return self.labels

    def columns(self) -> dict[str, str | int]:
        named = {"text": self.text_a_column, "text_b": self.text_b_column, "label": self.label_column}
        return {name: column for name, column in named.items() if column is not None}

    def get_train_examples(self, data_dir):
        return self.read_file(os.path.join(data_dir, f"train.{self.extension}"), "train")

    def get_dev_examples(self, data_dir):
        return self.read_file(os.path.join(data_dir, f"dev.{self.extension}"), "dev")

    def get_test_examples(self, data_dir):
        return self.read_file(os.path.join(data_dir, f"test.{self.extension}"), "test")

    def read_file(self, path: str, split: str) -> list[InputExample]:
        """Reads one file; labeled when it has the label column."""
        if not os.path.isfile(path):
            raise MissingFileError(f"data file not found: {path}")
        header = self._header(path) if self.has_header else None
        columns = self._columns(path, header)
        return self._read_rows(path, self.delimiter, header, columns, split, labeled=columns.label is not None)

    def _header(self, path: str) -> list[str]:
        for line_no, fields in split_lines(path, self.delimiter, skip_header=False, header=None):
            if isinstance(fields, str):
                raise DataFormatError(path, line_no, f"header {fields}")
            return [h.strip() for h in fields]
        raise DataFormatError(path, 1, "empty file: expected a header")

    def _columns(self, path: str, header: list[str] | None) -> _Columns:
        def index(column, required):
            if column is None:
                return None
            if header is None:
                return int(column)
            if column in header:
                return header.index(column)
            if required:
                raise DataFormatError(path, 1, f"no column {column!r} in header {header}")
            return None
        text_a, text_b = index(self.text_a_column, True), index(self.text_b_column, True)
        label = index(self.label_column, False)
        count = len(header) if header is not None else 1 + max(i for i in (text_a, text_b, label) if i is not None)
        return _Columns(count=count, text_a=text_a, text_b=text_b, label=label)


PROCESSORS = {"sst-2": Sst2Processor, "sst2": Sst2Processor,
              "tsv": TextClassificationProcessor, "csv": TextClassificationProcessor}


def get_processor(task_name: str, **kwargs) -> DataProcessor:
    """The processor registered for `task_name` (case-insensitive); `csv` implies extension csv."""
    key = task_name.lower()
    if key not in PROCESSORS:
        raise FlagError("task_name", f"unknown task {shorten(repr(task_name))}; known tasks: {sorted(PROCESSORS)}")
    if key == "csv":
        kwargs.setdefault("extension", "csv")
    return PROCESSORS[key](**kwargs)


def processor_from_config(config: DataConfig) -> DataProcessor:
    """The data processor of the task `config` describes (a user's own files: its columns, labels and
    format)."""
    if not config.own_files:
        return get_processor(config.task_name, on_error=config.on_error)
    config.check_labels()

    def column(name: str) -> str | int | None:
        value = getattr(config, name)
        if value is None or config.has_header:
            return value
        try:
            return int(value)
        except ValueError:
            raise ConfigFieldError(name, f"{field(name)}={value!r}: without a header, columns are 0-based "
                                         "indices") from None

    return get_processor(config.task_name, labels=list(config.labels), text_a_column=column("text_a_column"),
                         text_b_column=column("text_b_column"), label_column=column("label_column"),
                         delimiter=config.delimiter, has_header=config.has_header, on_error=config.on_error)
