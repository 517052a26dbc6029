"""The transfer set: sentences with a label and the teacher's logits, as a plain TSV.

Header `sentence<TAB>label<TAB>logit_<label 0>...`; one row per sentence. Written by
`generate_dataset.py`, read by the students' `distil` modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertdistill.data import DataFormatError, InputExample, split_lines


def header(labels: Sequence[str]) -> str:
    return "\t".join(["sentence", "label", *(f"logit_{label}" for label in labels)]) + "\n"


def format_rows(sentences: Sequence[str], labels: Sequence[str], logits: np.ndarray) -> str:
    """TSV lines for sentences with their labels and teacher logits ([n, num_labels])."""
    return "".join(f"{sentence}\t{label}\t" + "\t".join(f"{v:.6g}" for v in row) + "\n"
                   for sentence, label, row in zip(sentences, labels, logits))


def read_transfer_set(path: str, labels: Sequence[str]) -> tuple[list[InputExample], np.ndarray]:
    """Examples and float32 teacher logits [n, num_labels] from a transfer-set TSV.

    Raises `DataFormatError` (path:line) for a header that does not match `labels`, a wrong
    column count, an empty sentence, an unknown label or a logit that is not a finite number.
    """
    expected = header(labels).rstrip("\n").split("\t")
    examples, logits = [], []
    for line_number, fields in split_lines(path, "\t", skip_header=True, header=expected):
        if isinstance(fields, str):
            raise DataFormatError(path, line_number, fields)
        if len(fields) != len(expected):
            raise DataFormatError(path, line_number, f"expected {len(expected)} columns, found {len(fields)}")
        sentence, label, *values = fields
        if not sentence.strip():
            raise DataFormatError(path, line_number, "empty sentence")
        if label not in labels:
            raise DataFormatError(path, line_number, f"unknown label {label!r}; expected one of {list(labels)}")
        try:
            row = [float(v) for v in values]
        except ValueError:
            raise DataFormatError(path, line_number, f"logits {values} are not numbers") from None
        if not np.isfinite(row).all():
            raise DataFormatError(path, line_number, f"logits {values} are not finite")
        examples.append(InputExample(guid=f"transfer-{line_number - 1}", text_a=sentence, label=label))
        logits.append(row)
    return examples, np.asarray(logits, np.float32).reshape(-1, len(labels))
