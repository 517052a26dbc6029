"""The BiLSTM student's word vocabulary without TensorFlow: tokenization, building, saving, encoding.

Ids 0, 1, 2 are `[PAD]`, `[UNK]`, `[MASK]` (the augmented transfer set masks words); the rest
are the training words by descending count (ties alphabetical), at least `min_count` times,
at most `max_size` entries in all. Saved as `vocab.txt`, one token per line, line = id.

`distil_lstm/vocab.py` adds the TensorFlow parts (ragged batches, embedding tables); the
predictor (`bertdistill/serving/predictor.py`) uses this module alone, so raw text -> word ids needs no
TensorFlow at inference time.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence

from bertdistill.files import atomic_output
from bertdistill.data.tokenization import MASK, PAD, UNK

WORD_SPECIAL_TOKENS = (PAD, UNK, MASK)  # ids 0, 1, 2 of every word vocabulary
BILSTM_POOLINGS = ("max", "mean", "last")  # the BiLSTM's pooling over time (distil_lstm/model.py)
_WORD = re.compile(r"\[mask\]|\w+(?:'\w+)?|'\w+|[^\w\s]", re.IGNORECASE)


def tokenize(text: str, do_lower_case: bool = True) -> list[str]:
    """Words, contractions (`n't`, `'s`) and punctuation marks; `[MASK]` stays one token."""
    words = _WORD.findall(text.lower() if do_lower_case else text)
    return [MASK if w.lower() == "[mask]" else w for w in words]


class WordVocab:
    """Token <-> id mapping with the special tokens first."""

    def __init__(self, tokens: Sequence[str], do_lower_case: bool = True):
        if tuple(tokens[:len(WORD_SPECIAL_TOKENS)]) != WORD_SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {WORD_SPECIAL_TOKENS}, got {list(tokens[:3])}")
        self.tokens = list(tokens)
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        self.do_lower_case = do_lower_case

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], *, min_count: int = 1, max_size: int | None = None,
              do_lower_case: bool = True) -> WordVocab:
        """The vocabulary of `texts` (see the module docstring for the order and limits)."""
        counts = collections.Counter(w for text in texts for w in tokenize(text, do_lower_case))
        words = sorted((w for w, c in counts.items() if c >= min_count and w not in WORD_SPECIAL_TOKENS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max(max_size - len(WORD_SPECIAL_TOKENS), 0)]
        return cls([*WORD_SPECIAL_TOKENS, *words], do_lower_case)

    def save(self, path: str) -> None:
        """Writes `vocab.txt` (one token per line), atomically."""
        with atomic_output(path) as f:
            f.writelines(token + "\n" for token in self.tokens)

    @classmethod
    def load(cls, path: str, do_lower_case: bool = True) -> WordVocab:
        with open(path, encoding="utf-8") as f:
            return cls([line.rstrip("\n") for line in f], do_lower_case)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Word ids of `text` (unknown words -> `[UNK]`), truncated to `max_length`."""
        unk = self.ids[UNK]
        ids = [self.ids.get(w, unk) for w in tokenize(text, self.do_lower_case)]
        return (ids[:max_length] if max_length else ids) or [unk]  # an empty text still has one step
