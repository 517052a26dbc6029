"""The SavedModel's string signature: raw text in, the project's WordPiece encoding inside the
graph (tensorflow-text), `label`, `probabilities` and `logits` out, so a TensorFlow Serving client
sends text instead of re-implementing the tokenizer.

The graph reproduces `bertdistill.data.tokenization.Tokenizer` (Hugging Face's added-token
matching, BertNormalizer, BertPreTokenizer, WordPiece and post-processor, read from the tokenizer
itself) step by step:

0. the special tokens written in the text (`Tokenizer.literal_tokens`: `[SEP]`, `<s>`, `[MASK]`,
   ...) are split out as written, longest first, and become their ids; the text between them
   goes through the steps below;
1. clean text: `\\t \\n \\r` and every separator (`\\p{Z}`) become a space; NUL, U+FFFD and the
   other control / format / private-use characters (`\\p{C}`) are removed;
2. every CJK ideograph is surrounded by spaces;
3. uncased vocabularies: NFD, combining marks (`\\p{Mn}`) removed, then lower-cased per character
   (a capital sigma always becomes `σ`, as Hugging Face's per-character lower-casing does; ICU
   would give `ς` at the end of a word);
4. split on spaces, every punctuation character (ASCII punctuation and `\\p{P}`) a word of its own;
5. a word longer than the WordPiece `max_input_chars_per_word` (characters) is the unknown token,
   the others go through tensorflow-text's `WordpieceTokenizer` (greedy longest match, `##`
   continuation, a word with an unknown piece becomes the unknown token) over a lookup table
   read from the vocabulary, an asset of the SavedModel (`assets/vocab.txt`);
6. truncation to `max_seq_length` with the special tokens, longest first with the rule of
   Hugging Face `tokenizers` for pairs (see `_pair_lengths`);
7. BERT: `[CLS] a [SEP]` / `[CLS] a [SEP] b [SEP]`, token types 0 then 1; MPNet: `<s> a </s>` /
   `<s> a </s></s> b </s>`, token types 0; padded with the vocabulary's pad id.

Unicode tables are those of TensorFlow's RE2 and ICU, not of the Rust tokenizer: unassigned code
points or characters newer than one of them may be classified differently.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence

import tensorflow as tf

from bertdistill.export_format import TEXT_PAIR, SINGLE_TEXT
from bertdistill.data.tokenization import Tokenizer

# Hugging Face's `_is_chinese_char` ranges (CJK Unified Ideographs and their extensions, compatibility ideographs).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
CJK_CLASS = "[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in CJK_RANGES) + "]"
# Rust's `char::is_ascii_punctuation` or a Unicode punctuation category.
PUNCTUATION_CLASS = r"[!-/:-@\[-`{-~\p{P}]"
VOCAB_ASSET = "vocab.txt"


@dataclasses.dataclass(frozen=True)
class TextEncoding:
    """What the graph needs to encode text as `Tokenizer.encode_batch` does."""

    vocab_file: str
    do_lower_case: bool
    max_seq_length: int
    pair: bool = False


def _backend_settings(tokenizer: Tokenizer) -> dict:
    """The Hugging Face backend's normalizer and WordPiece model settings, checked to be the
    ones this graph reproduces."""
    config = json.loads(tokenizer._hf.backend_tokenizer.to_str())  # noqa: SLF001 - the tokenizer the project trains with
    normalizer, model = config["normalizer"], config["model"]
    if normalizer.get("type") != "BertNormalizer" or model.get("type") != "WordPiece" or \
            config["pre_tokenizer"].get("type") != "BertPreTokenizer":
        raise ValueError(f"the string signature reproduces BERT's WordPiece pipeline, not {normalizer.get('type')} / "
                         f"{config['pre_tokenizer'].get('type')} / {model.get('type')}")
    strip_accents = normalizer["strip_accents"]
    return {"clean_text": bool(normalizer["clean_text"]), "cjk": bool(normalizer["handle_chinese_chars"]),
            "lowercase": bool(normalizer["lowercase"]),
            "strip_accents": bool(normalizer["lowercase"] if strip_accents is None else strip_accents),
            "unk_token": model["unk_token"], "prefix": model["continuing_subword_prefix"],
            "max_chars": int(model["max_input_chars_per_word"])}


def normalize(texts: tf.Tensor, settings: dict) -> tf.Tensor:
    """Hugging Face's BertNormalizer on a string tensor."""
    import tensorflow_text as tf_text

    if settings["clean_text"]:
        texts = tf.strings.regex_replace(texts, r"[\t\n\r]", " ")
        texts = tf.strings.regex_replace(texts, r"[\x{0}\x{FFFD}\p{C}]", "")
        texts = tf.strings.regex_replace(texts, r"\p{Z}", " ")
    if settings["cjk"]:
        texts = tf.strings.regex_replace(texts, f"({CJK_CLASS})", r" \1 ")
    if settings["strip_accents"]:
        texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
    if settings["lowercase"]:
        texts = tf.strings.lower(tf.strings.regex_replace(texts, "\u03a3", "\u03c3"), encoding="utf-8")
    return texts


def _pair_lengths(len_a: tf.Tensor, len_b: tf.Tensor, budget: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Hugging Face `tokenizers`' longest-first truncation of a pair to `budget` tokens, per row:
    the shorter text keeps its length and the longer one takes the rest when that leaves it at
    least as long; otherwise the first text (if not longer) gets budget // 2 and the other the
    remainder."""
    budget = tf.cast(budget, len_a.dtype)  # row lengths are int64
    shorter = tf.minimum(len_a, len_b)
    keep_short = shorter
    keep_long = tf.where(shorter > budget, shorter, tf.maximum(shorter, budget - shorter))
    over = keep_short + keep_long > budget
    keep_short = tf.where(over, budget // 2, keep_short)
    keep_long = tf.where(over, budget // 2 + budget % 2, keep_long)
    swapped = len_a > len_b
    limit_a = tf.where(swapped, keep_long, keep_short)
    limit_b = tf.where(swapped, keep_short, keep_long)
    return tf.minimum(len_a, limit_a), tf.minimum(len_b, limit_b)


def _vocab_asset(vocab_file: str, vocab: dict[str, int], folder: str) -> str:
    """`vocab_file`, or when a token repeats (the lookup table takes each key once; the tokenizer
    uses its first line) or lines end in `\\r\\n`, a copy in `folder` with the repeats replaced by
    strings no word contains and `\\n` line ends."""
    with open(vocab_file, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    with open(vocab_file, "rb") as f:
        crlf = b"\r" in f.read()
    if len(vocab) == len(lines) and not crlf:
        return vocab_file
    lines = [line if vocab.get(line) == index else f"<duplicate line {index}> " for index, line in enumerate(lines)]
    path = os.path.join(folder, VOCAB_ASSET)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


class TextEncoder(tf.Module):
    """Strings -> the int32 `input_ids`, `attention_mask`, `token_type_ids` of `encoding`, padded
    with the vocabulary's pad id; holds the vocabulary lookup table (an asset)."""

    def __init__(self, encoding: TextEncoding, asset_folder: str):
        import tensorflow_text as tf_text

        super().__init__()
        if encoding.max_seq_length < (3 if encoding.pair else 2):
            raise ValueError(f"max_seq_length {encoding.max_seq_length} leaves no room for text")
        tokenizer = Tokenizer(encoding.vocab_file, encoding.do_lower_case)
        self.settings = _backend_settings(tokenizer)
        self.family = tokenizer.family
        self.pad_id, self.cls_id, self.sep_id = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id
        self.max_seq_length = encoding.max_seq_length
        self.pair = encoding.pair
        if self.settings["unk_token"] not in tokenizer.vocab:
            raise ValueError(f"{encoding.vocab_file}: vocabulary lacks the unknown token {self.settings['unk_token']}")
        asset = _vocab_asset(encoding.vocab_file, tokenizer.vocab, asset_folder)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                                          tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        literals = tokenizer.literal_tokens()
        self.literal_pattern = "|".join(re.escape(token) for token in sorted(literals, key=len, reverse=True))
        self.literals = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(list(literals), list(literals.values()), tf.string, tf.int64),
            default_value=-1)
        # Words are at most max_chars characters (longer ones are replaced by the unknown token
        # first), so at most 4 bytes each.
        self.wordpiece = tf_text.WordpieceTokenizer(self.table, suffix_indicator=self.settings["prefix"],
                                                    max_bytes_per_word=4 * self.settings["max_chars"] + 4,
                                                    token_out_type=tf.int64, unknown_token=self.settings["unk_token"])

    def pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """int64 token ids [batch, (tokens)] of a string vector, without the template's special
        tokens: the special tokens written in a text as their ids, the rest in WordPiece pieces."""
        import tensorflow_text as tf_text

        if self.settings["clean_text"]:  # regex_split stops at a NUL; cleaning removes both characters
            texts = tf.strings.regex_replace(texts, r"\x{0}", "\uE000")
        segments = tf_text.regex_split(texts, self.literal_pattern, self.literal_pattern)
        literal_ids = self.literals.lookup(segments.flat_values)
        is_literal = literal_ids >= 0
        literal_rows = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(literal_ids, is_literal),
                                                        tf.cast(is_literal, tf.int64))
        words = self.word_pieces(tf.where(is_literal, "", segments.flat_values))
        return segments.with_flat_values(tf.concat([literal_rows, words], axis=1)).merge_dims(1, 2)

    def word_pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """int64 WordPiece ids [batch, (tokens)] of a string vector without special tokens."""
        import tensorflow_text as tf_text

        texts = normalize(texts, self.settings)
        words = tf_text.regex_split(texts, f" |{PUNCTUATION_CLASS}", PUNCTUATION_CLASS)
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > self.settings["max_chars"]
        words = words.with_flat_values(tf.where(too_long, self.settings["unk_token"], words.flat_values))
        return self.wordpiece.tokenize(words).merge_dims(1, 2)

    def __call__(self, texts: tf.Tensor, texts_b: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        a = self.pieces(texts)
        batch = tf.shape(texts, out_type=tf.int64)[:1]
        cls = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([batch, [1]], 0), tf.constant(self.cls_id, tf.int64)))
        sep = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([batch, [1]], 0), tf.constant(self.sep_id, tf.int64)))
        if texts_b is None:
            a = a[:, :self.max_seq_length - 2]
            segments = [(cls, 0), (a, 0), (sep, 0)]
        else:
            b = self.pieces(texts_b)
            # MPNet (RoBERTa's template) puts two separators between the texts.
            middle = [(sep, 0), (sep, 0)] if self.family == "mpnet" else [(sep, 0)]
            budget = self.max_seq_length - 2 - len(middle)
            len_a, len_b = _pair_lengths(a.row_lengths(), b.row_lengths(), budget)
            a = tf.RaggedTensor.from_row_lengths(tf.ragged.boolean_mask(
                a, tf.ragged.range(a.row_lengths()) < tf.expand_dims(len_a, 1)).flat_values, len_a)
            b = tf.RaggedTensor.from_row_lengths(tf.ragged.boolean_mask(
                b, tf.ragged.range(b.row_lengths()) < tf.expand_dims(len_b, 1)).flat_values, len_b)
            second = 0 if self.family == "mpnet" else 1
            segments = [(cls, 0), (a, 0), *middle, (b, second), (sep, second)]
        ids = tf.concat([part for part, _ in segments], axis=1)
        types = tf.concat([tf.ones_like(part) * kind for part, kind in segments], axis=1)
        return {"input_ids": tf.cast(ids.to_tensor(default_value=self.pad_id), tf.int32),
                "attention_mask": tf.cast(tf.ones_like(ids).to_tensor(default_value=0), tf.int32),
                "token_type_ids": tf.cast(types.to_tensor(default_value=0), tf.int32)}


def text_input_signature(pair: bool = False) -> list[dict[str, tf.TensorSpec]]:
    names = TEXT_PAIR if pair else SINGLE_TEXT
    return [{name: tf.TensorSpec([None], tf.string, name=name) for name in names}]


def add_text_signature(archive, name: str, classify, encoding: TextEncoding, labels: Sequence[str],
                       asset_folder: str) -> None:
    """Adds to the Keras `ExportArchive` the endpoint `name`: `text` (and `text_b` when
    `encoding.pair`), string [batch] -> `label` (string [batch]), `probabilities` and `logits`
    (float32 [batch, num_labels]); `classify(features)` gives the logits and probabilities of
    the id features. The vocabulary is copied into the SavedModel's `assets/` when the archive
    is written (from `encoding.vocab_file`, or a repaired copy written to `asset_folder`, which
    must last until then)."""
    encoder = TextEncoder(encoding, asset_folder)
    for table in (encoder.table, encoder.literals):
        archive.track(table)
    label_names = tf.constant([str(label) for label in labels])

    def serve(inputs):
        features = encoder(inputs["text"], inputs["text_b"] if encoding.pair else None)
        outputs = classify(features)
        label = tf.gather(label_names, tf.argmax(outputs["probabilities"], axis=-1))
        return {"label": tf.identity(label, name="label"), "probabilities": outputs["probabilities"],
                "logits": outputs["logits"]}

    archive.add_endpoint(name, serve, text_input_signature(encoding.pair))
