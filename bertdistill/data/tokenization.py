"""WordPiece tokenization through Hugging Face's fast tokenizers, built from a `vocab.txt`.

Two families share BERT's WordPiece and differ in their special tokens, told apart by the
vocabulary itself:
- BERT: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, token type ids 0 then 1, `[PAD]` = 0;
- MPNet (a vocabulary with `<s>`, `</s>`, `<pad>`, `<mask>`): `<s> a </s>` or
  `<s> a </s></s> b </s>`, token type ids all 0 (MPNet has none), `<pad>` = 1.
Sequences are truncated longest-first to `max_seq_length` and left unpadded (the tf.data
pipeline pads, with `Tokenizer.pad_id`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

# pad, unk, cls, sep, mask of each family: the toolkit's one list of special tokens (the BiLSTM's
# word vocabulary takes BERT's [PAD], [UNK] and [MASK], `bertdistill.data.words`).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MPNET_SPECIAL_TOKENS = ("<pad>", "[UNK]", "<s>", "</s>", "<mask>")
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS


def load_vocab(vocab_file: str) -> dict[str, int]:
    """Reads a BERT `vocab.txt` (one token per line, id = line index)."""
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\r\n") for line in f]
    vocab = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    return vocab


def is_mpnet_vocab(vocab: dict[str, int]) -> bool:
    """True for an MPNet vocabulary (BERT's WordPiece with `<s>`, `</s>`, `<pad>`, `<mask>`)."""
    return all(token in vocab for token in ("<s>", "</s>", "<pad>", "<mask>"))


class Tokenizer:
    """WordPiece tokenizer of a BERT or an MPNet vocabulary; `do_lower_case` lower-cases and
    strips accents (uncased models). A masked word in a text is written `[MASK]` (the transfer
    set, the perturbations) whatever the model: each family reads it as its own mask token."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True):
        vocab = load_vocab(vocab_file)
        self.family = "mpnet" if is_mpnet_vocab(vocab) else "bert"
        special = MPNET_SPECIAL_TOKENS if self.family == "mpnet" else SPECIAL_TOKENS
        missing = [t for t in special if t not in vocab]
        if missing:
            raise ValueError(f"{vocab_file}: vocabulary lacks the special tokens {missing}")
        from transformers import BertTokenizer, MPNetTokenizer  # here: `bertdistill.data.words` reads the tokens above

        # transformers 5 takes the vocabulary itself (`vocab`); a `vocab_file` keyword is ignored.
        hf_class = MPNetTokenizer if self.family == "mpnet" else BertTokenizer
        self._hf = hf_class(vocab=vocab, do_lower_case=do_lower_case)
        self.vocab_file = vocab_file
        self.do_lower_case = do_lower_case
        self.vocab = vocab
        self.vocab_size = len(vocab)
        self.special_tokens = special
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in special)

    @property
    def backend(self):
        """The Rust tokenizer (`tokenizers.Tokenizer`: normalizer, pre-tokenizer, WordPiece model)."""
        return self._hf.backend_tokenizer

    def own_masks(self, texts: Sequence[str]) -> list[str]:
        """`texts` with each `[MASK]` written as this vocabulary's mask token (MPNet's `<mask>`)."""
        own = self.special_tokens[-1]
        return list(texts) if own == MASK else [text.replace(MASK, own) for text in texts]

    def literal_tokens(self) -> dict[str, int]:
        """The strings that are one token where a text holds them as written (matched before
        normalization, case-sensitive): the vocabulary's special tokens, as Hugging Face's tokenizer
        matches them, and `[MASK]` (`own_masks`); with their ids."""
        added = self.backend.get_added_tokens_decoder()
        return {**{token.content: index for index, token in added.items()}, MASK: self.mask_id}

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without special tokens."""
        return self._hf.tokenize(text)

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def encode(self, text_a: str, text_b: str | None = None, max_seq_length: int = 128) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of one example."""
        ids, types = self.encode_batch([text_a], None if text_b is None else [text_b], max_seq_length)
        return ids[0], types[0]

    def encode_batch(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                     max_seq_length: int = 128) -> tuple[list[list[int]], list[list[int]]]:
        """(input_ids, token_type_ids) of many examples in one call into the Rust tokenizer."""
        if max_seq_length < (3 if texts_b is not None else 2):
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for text")
        # The Rust backend directly: transformers' __call__ adds Python overhead per example.
        backend = self.backend
        backend.enable_truncation(max_seq_length, strategy="longest_first")
        texts_a = self.own_masks(texts_a)
        inputs = texts_a if texts_b is None else list(zip(texts_a, self.own_masks(texts_b)))
        encodings = backend.encode_batch(inputs, add_special_tokens=True)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]


def piece_id_map(source: Tokenizer, target: Tokenizer) -> np.ndarray:
    """int32 [source vocab]: for each id of `source`, the id of the same word piece in `target`
    (special tokens by role: pad, unk, cls, sep, mask), -1 where `target` has no such piece.
    Two tokenizations of a sentence are aligned when mapping one gives the other."""
    roles = dict(zip(source.special_tokens, target.special_tokens))
    table = np.full(source.vocab_size, -1, np.int32)
    for token, index in source.vocab.items():
        table[index] = target.vocab.get(roles.get(token, token), -1)
    return table


def unknown_share(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    """The share of `texts`' WordPiece tokens that are the unknown token (0 for no tokens)."""
    ids, _ = tokenizer.encode_batch(texts, max_seq_length=1 << 16)
    special = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}
    tokens = [i for row in ids for i in row if i not in special]
    return sum(i == tokenizer.unk_id for i in tokens) / max(len(tokens), 1)


UNKNOWN_WARNING = 0.05  # a share of [UNK] tokens worth a warning
UNKNOWN_LIMIT = 0.2  # refused above this when the other casing would at least halve it
CASING_SAMPLE = 2000  # texts measured


def check_casing(tokenizer: Tokenizer, texts: Sequence[str], source: str) -> float:
    """Measures the [UNK] share of (the first `CASING_SAMPLE` of) `texts` before any training:
    above `UNKNOWN_LIMIT`, when the other `do_lower_case` would at least halve it, a
    `FlagError` naming `do_lower_case` (e.g. an uncased vocabulary read without lower-casing);
    above `UNKNOWN_WARNING`, a warning. Returns the share."""
    from absl import logging

    from bertdistill.errors import FlagError, field

    sample = list(texts[:CASING_SAMPLE])
    share = unknown_share(tokenizer, sample)
    if share <= UNKNOWN_WARNING:
        return share
    other = unknown_share(Tokenizer(tokenizer.vocab_file, not tokenizer.do_lower_case), sample)
    said = f"{100 * share:.0f}% of the tokens of {source} are [UNK] with do_lower_case={tokenizer.do_lower_case}"
    if share > UNKNOWN_LIMIT and other <= share / 2:
        casing = field("do_lower_case")
        raise FlagError("do_lower_case", f"{said.replace('do_lower_case', casing)} ({100 * other:.0f}% with "
                        f"{casing}={not tokenizer.do_lower_case}): the casing does not match the vocabulary "
                        f"{tokenizer.vocab_file}; pass {casing}={not tokenizer.do_lower_case}")
    logging.warning("%s (%.0f%% with do_lower_case=%s): does the vocabulary %s fit this data?", said, 100 * other,
                    not tokenizer.do_lower_case, tokenizer.vocab_file)
    return share
