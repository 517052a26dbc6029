"""Data augmentation for the transfer set, after Tang et al. (2019), section 3.3.

"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks" grows the
distillation data with sentences that stay close to the task's distribution. Each new sentence
comes from one pass over a whitespace-tokenized example:

- masking: for each word, draw u ~ U(0, 1); if u < p_mask the word becomes the mask token;
- replacement: elif u < p_mask + p_replace, the word becomes another word of the same kind,
  chosen by a `Replacer`: one of its k nearest neighbours in an embedding space
  (`NeighbourReplacer`) or a word with the same part-of-speech tag drawn from the corpus unigram
  distribution of that tag (`PosReplacer`);
- n-gram sampling: then, with probability p_ngram, the whole (already modified) example is cut
  down to a random contiguous n-gram, n drawn uniformly from 1..max_ngram (only when n is
  smaller than the number of words).

`augment_sentence` repeats the pass `num` times and keeps the distinct results that differ from
the original. Every draw comes from the generator it is given; `rng_for(seed, index)` gives each
example its own generator, so a dataset augments identically whole or in shards.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import numpy as np

from bertdistill.data.tokenization import CLS, MASK, SEP, UNK

_CHUNK = 256  # query rows per similarity product: bounds memory to a few [256, vocabulary] arrays


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities of the three rules and the token that masks a word."""

    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    mask_token: str = MASK

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_replace", "p_ngram"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if self.p_mask + self.p_replace > 1.0 + 1e-9:
            raise ValueError(f"p_mask + p_replace must be at most 1, got {self.p_mask} + {self.p_replace}")
        if self.max_ngram < 1:
            raise ValueError(f"max_ngram must be at least 1, got {self.max_ngram}")


class Replacer(typing.Protocol):
    def sample(self, words: Sequence[str], positions: Sequence[int], rng: np.random.Generator) -> list[str | None]:
        """A same-kind replacement for words[i] for each i in positions (None: keep the word)."""


def read_word_vectors(path: str, *, max_words: int | None = None,
                      vocabulary: Collection[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Words and float32 vectors [n, dim] of a GloVe text file (`word v1 ... vd` per line) or a
    word2vec text file (the same after a first line `count dim`). Keeps only words in
    `vocabulary` when given, reads the first `max_words` vectors when given. A malformed line
    raises ValueError naming path:line."""
    words: list[str] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    dim = None
    read = 0
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip()
            if not line:
                continue
            if dim is None:
                fields = line.split()
                header = len(fields) == 2 and all(field.isdigit() for field in fields)  # word2vec `count dim`
                dim = int(fields[1]) if header else len(fields) - 1
                if dim < 1:
                    raise ValueError(f"{path}:{line_number}: expected a word followed by its vector")
                if header:
                    continue
            if max_words is not None and read >= max_words:
                break
            read += 1
            fields = line.rsplit(None, dim)  # the word itself may contain spaces (GloVe 840B)
            if len(fields) != dim + 1:
                raise ValueError(f"{path}:{line_number}: expected a word and {dim} numbers, "
                                 f"found {len(fields)} fields")
            word = fields[0]
            if word in seen or (vocabulary is not None and word not in vocabulary):
                continue
            try:
                vector = np.array(fields[1:], np.float32)
            except ValueError:
                raise ValueError(f"{path}:{line_number}: the vector of {word!r} is not numbers") from None
            seen.add(word)
            words.append(word)
            vectors.append(vector)
    if not words:
        raise ValueError(f"{path}: no word vectors" + (" in the vocabulary" if vocabulary is not None else ""))
    return words, np.stack(vectors)


def is_special_token(token: str) -> bool:
    """A vocabulary's special or unused token, never a word: bracketed (BERT's `[CLS]`,
    `[unused3]`) or angle-bracketed (MPNet's `<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>`)."""
    return len(token) > 2 and ((token[0], token[-1]) in (("[", "]"), ("<", ">")))


class NeighbourReplacer:
    """Replacement = one of the k nearest words by cosine similarity in an embedding space, uniformly."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray, k: int = 10):
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(words):
            raise ValueError(f"expected one vector per word: {len(words)} words, vectors of shape {vectors.shape}")
        if len(words) < 2:
            raise ValueError(f"an embedding space needs at least two words, got {len(words)}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self._words = list(words)
        self._index = {word: i for i, word in enumerate(self._words)}
        if len(self._index) != len(self._words):
            raise ValueError("the words of an embedding space must be distinct")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._unit = vectors / np.where(norms > 0, norms, 1.0)
        self._k = min(k, len(self._words) - 1)
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def from_word_vectors_file(cls, path: str, k: int = 10, max_words: int | None = None,
                               vocabulary: Collection[str] | None = None) -> NeighbourReplacer:
        """The space of a word-vector text file (see `read_word_vectors`)."""
        return cls(*read_word_vectors(path, max_words=max_words, vocabulary=vocabulary), k)

    @classmethod
    def from_token_embeddings(cls, vocab: Mapping[str, int], embeddings: np.ndarray, k: int = 10) -> NeighbourReplacer:
        """A teacher's own input embeddings, whole-word tokens only: no `##` pieces, no special
        tokens (`[PAD]`, `[unused12]`, MPNet's `</s>`: `is_special_token`), at least one letter."""
        words = [token for token in vocab
                 if not token.startswith("##") and not is_special_token(token) and any(c.isalpha() for c in token)]
        return cls(words, np.asarray(embeddings)[[vocab[word] for word in words]], k)

    def precompute(self, words: Iterable[str]) -> None:
        """Computes and caches the neighbours of many words at once (chunked matrix products
        over L2-normalised vectors)."""
        self._compute([self._index[word] for word in words if word in self._index])

    def neighbours(self, word: str) -> list[str]:
        """The k nearest words to `word`, nearest first ([] when `word` is not in the space)."""
        if word not in self._index:
            return []
        i = self._index[word]
        self._compute([i])
        return [self._words[j] for j in self._cache[i]]

    def sample(self, words: Sequence[str], positions: Sequence[int], rng: np.random.Generator) -> list[str | None]:
        """A uniformly drawn neighbour of words[i] for each i in positions (None: not in the space)."""
        indices = [self._index.get(words[i]) for i in positions]
        self._compute([i for i in indices if i is not None])
        draws = rng.random(len(indices)).tolist()
        out: list[str | None] = []
        for i, u in zip(indices, draws):
            if i is None:
                out.append(None)
            else:
                neighbours = self._cache[i]
                out.append(self._words[neighbours[int(u * len(neighbours))]])
        return out

    def _compute(self, indices: list[int]) -> None:
        missing = np.array(list(dict.fromkeys(i for i in indices if i not in self._cache)), np.int64)
        k = self._k
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start:start + _CHUNK]
            similarity = self._unit[chunk] @ self._unit.T
            similarity[np.arange(len(chunk)), chunk] = -np.inf  # never the word itself
            top = np.sort(np.argpartition(similarity, -k, axis=1)[:, -k:], axis=1)  # ties: lower index first
            order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1, kind="stable")
            for i, row in zip(chunk.tolist(), np.take_along_axis(top, order, axis=1)):
                self._cache[i] = row


class _Unigram:
    """Word counts of one tag, drawn from in proportion to count, optionally excluding one word."""

    def __init__(self, counts: collections.Counter[str]):
        self.words = list(counts)
        self.counts = [counts[word] for word in self.words]
        self.position = {word: j for j, word in enumerate(self.words)}
        self.cumulative = np.cumsum(self.counts).tolist()
        self.total = self.cumulative[-1]

    def draw(self, exclude: str, u: float) -> str | None:
        j = self.position.get(exclude)
        count = 0 if j is None else self.counts[j]
        total = self.total - count
        if total == 0:
            return None
        r = min(int(u * total), total - 1)
        if j is not None and r >= self.cumulative[j] - count:
            r += count  # skip over the excluded word's interval
        return self.words[bisect.bisect_right(self.cumulative, r)]


class PosReplacer:
    """POS-guided replacement: a word of the same part-of-speech tag, drawn from the corpus
    unigram distribution of that tag."""

    def __init__(self, tag_fn: Callable[[Sequence[str]], Sequence[str]], corpus: Iterable[Sequence[str]]):
        self._tag_fn = tag_fn
        counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for sentence in corpus:
            for word, tag in zip(sentence, self._tags(sentence)):
                counts[tag][word] += 1
        self._unigrams = {tag: _Unigram(tag_counts) for tag, tag_counts in counts.items()}

    def sample(self, words: Sequence[str], positions: Sequence[int], rng: np.random.Generator) -> list[str | None]:
        """Another word with the tag of words[i] for each i in positions (None: no other word has that tag)."""
        if not positions:
            return []
        tags = self._tags(words)
        out: list[str | None] = []
        for i, u in zip(positions, rng.random(len(positions)).tolist()):
            unigram = self._unigrams.get(tags[i])
            out.append(None if unigram is None else unigram.draw(words[i], u))
        return out

    def _tags(self, words: Sequence[str]) -> Sequence[str]:
        tags = self._tag_fn(words)
        if len(tags) != len(words):
            raise ValueError(f"the tagger gave {len(tags)} tags for {len(words)} words: {list(words)}")
        return tags


def nltk_pos_tagger() -> Callable[[Sequence[str]], Sequence[str]] | None:
    """nltk's averaged perceptron tagger when nltk and its tagger data are installed (no
    download is attempted), else None."""
    try:
        from nltk.tag import PerceptronTagger

        tagger = PerceptronTagger()
    except (ImportError, LookupError, OSError):
        return None
    return lambda words: [tag for _, tag in tagger.tag(list(words))]


def rng_for(seed: int, index: int) -> np.random.Generator:
    """The generator for example `index`, so shards of a dataset augment exactly as the whole does."""
    return np.random.default_rng([seed, index])


def augment_sentence(sentence: str, num: int, rng: np.random.Generator, config: AugmentConfig,
                     replacer: Replacer | None) -> list[str]:
    """Up to `num` distinct new sentences from `sentence`, in generation order, never the
    original. With no `replacer`, a replace draw keeps the word."""
    words = sentence.split()
    original = " ".join(words)
    p_mask = config.p_mask
    p_mask_or_replace = config.p_mask + config.p_replace
    seen = {original}
    out = []
    for _ in range(num):
        draws = rng.random(len(words)).tolist()
        new = [config.mask_token if u < p_mask else word for word, u in zip(words, draws)]
        positions = [i for i, u in enumerate(draws) if p_mask <= u < p_mask_or_replace]
        if replacer is not None and positions:
            for i, replacement in zip(positions, replacer.sample(words, positions, rng)):
                if replacement is not None:
                    new[i] = replacement
        if rng.random() < config.p_ngram:
            n = int(rng.integers(1, config.max_ngram + 1))
            if n < len(new):
                start = int(rng.integers(len(new) - n + 1))
                new = new[start:start + n]
        candidate = " ".join(new)
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def pair_up(text_a: str, text_b: str, new_a: Sequence[str], new_b: Sequence[str]) -> list[tuple[str, str]]:
    """The new examples of a sentence pair from each side's new sentences (made independently, by
    the same rule as for single sentences): the k-th new pair takes each side's k-th new sentence,
    or that side's original when it has fewer. Every new pair differs from the original and from
    the others, and the pair keeps its label."""
    return [(new_a[k] if k < len(new_a) else text_a, new_b[k] if k < len(new_b) else text_b)
            for k in range(max(len(new_a), len(new_b)))]


# --- TinyBERT's augmentation (Jiao et al., 2020; huawei-noah/Pretrained-Language-Model, TinyBERT/) ---
#
# Each alphabetic non-stopword word of a (BERT basic-tokenized) sentence gets up to top_k
# candidate replacements, computed once per sentence: a single-WordPiece word gets the masked
# language model's best tokens at its position, a multi-piece word (or every word, without an
# MLM) its nearest neighbours in word vectors. Then each of `num` passes replaces every such word,
# with probability p, by one of its candidates drawn uniformly. The reference runs one MLM pass
# per word; `tinybert_candidates` sends the masked copies of many sentences through the MLM in
# batches.

# NLTK's English stopwords, as the reference embeds them (plus its "'s" and "'re").
TINYBERT_STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves this that that'll these
those am is are was were be been being have has had having do does did doing a an the and but if or because as
until while of at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there all any both each few more most other some
such no nor not only own same so than too very s t can will just don don't should should've now d ll m o re ve
y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't
wouldn wouldn't 's 're""".split())


def is_valid_word(word: str) -> bool:
    """A word TinyBERT may replace: ASCII letters only (any case) and not a stopword."""
    lower = word.lower()
    return lower.isascii() and lower.isalpha() and lower not in TINYBERT_STOPWORDS


def _is_special_or_piece(token: str) -> bool:
    return token.startswith("##") or is_special_token(token)


class WordSplitter:
    """BERT's basic tokenization (clean-up, optional lower-casing and accent stripping, splits on
    whitespace and punctuation) into words, and each word's WordPiece tokens: the components of
    `tokenizer` (a `bertdistill.data.tokenization.Tokenizer`: its normalizer, pre-tokenizer and
    WordPiece model), word by word."""

    def __init__(self, tokenizer):
        backend = tokenizer.backend
        self._normalizer, self._pre_tokenizer, self._wordpiece = backend.normalizer, backend.pre_tokenizer, backend.model
        self.vocab = tokenizer.vocab

    def split(self, sentence: str) -> tuple[list[str], list[list[str]]]:
        """(words, WordPiece tokens of each word)."""
        words = [w for w, _ in self._pre_tokenizer.pre_tokenize_str(self._normalizer.normalize_str(sentence))]
        return words, [[t.value for t in self._wordpiece.tokenize(w)] for w in words]


class MaskedLMCandidates:
    """The `top_k` best replacement tokens of a masked language model at one masked position per
    row, many rows per forward pass. Never `##` pieces, bracketed tokens (`[CLS]`, `[unused3]`) or
    the row's own (original) token. Returned in vocabulary order, not score order: a candidate is
    drawn uniformly, so the order carries nothing, and then only the membership of the k-th
    token can change with float rounding between batch shapes (a rare near tie), not the order
    of any two close scores.

    `model` is a `bertdistill.models.bert.BertMaskedLM` (or anything with its inputs and [B, P, vocab]
    float32 logits); only the masked position reaches its vocabulary projection.
    """

    def __init__(self, model, vocab: Mapping[str, int], top_k: int = 15):
        import tensorflow as tf

        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        vocab_size = int(model.config.vocab_size)
        self._tokens: list[str | None] = [None] * vocab_size
        for token, i in vocab.items():
            if i < vocab_size and self._tokens[i] is None:
                self._tokens[i] = token
        bias = np.array([0.0 if t is not None and not _is_special_or_piece(t) else -np.inf for t in self._tokens],
                        np.float32)
        self.top_k = min(top_k, vocab_size)
        self.max_positions = int(model.config.max_position_embeddings)
        k = self.top_k
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([None], tf.int32),
                                      tf.TensorSpec([None], tf.int32)])
        def best(input_ids, attention_mask, token_type_ids, positions, own_ids):
            logits = model({"input_ids": input_ids, "attention_mask": attention_mask,
                            "token_type_ids": token_type_ids, "masked_positions": positions[:, None]},
                           training=False)[:, 0]
            logits = logits + bias + tf.one_hot(own_ids, vocab_size, on_value=-np.inf, off_value=0.0)
            return tf.math.top_k(logits, k=k)

        self._best = best

    def __call__(self, rows: Sequence[tuple[Sequence[int], Sequence[int], int, int]],
                 batch_size: int = 256) -> list[list[str]]:
        """Candidates per row `(input_ids, token_type_ids, masked_position, own_id)`. Rows are
        grouped by length into batches of `batch_size` (1: one forward pass per row, the
        reference's way) and padded to the longest row of their batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        out: list[list[str]] = [[] for _ in rows]
        for start in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[start:start + batch_size]]
            width = max(len(ids) for ids, _, _, _ in batch)
            ids = np.zeros((len(batch), width), np.int32)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for r, (row_ids, row_types, _, _) in enumerate(batch):
                ids[r, :len(row_ids)], types[r, :len(row_ids)], mask[r, :len(row_ids)] = row_ids, row_types, 1
            positions = np.array([row[2] for row in batch], np.int32)
            own = np.array([row[3] for row in batch], np.int32)
            values, indices = (t.numpy() for t in self._best(ids, mask, types, positions, own))
            for i, row_values, row_indices in zip(order[start:start + batch_size], values, indices):
                out[i] = [self._tokens[j] for j, v in sorted(zip(row_indices.tolist(), row_values.tolist()))
                          if v > -np.inf]
        return out


def masked_lm_row(pieces: Sequence[Sequence[str]], word: int, vocab: Mapping[str, int],
                  max_seq_length: int) -> tuple[list[int], list[int], int, int] | None:
    """The reference's MLM input for single-piece word `word` of a sentence given as its words'
    WordPiece tokens: `[CLS] sentence-with-[MASK] [SEP] sentence [SEP]`, segment ids 0 then 1,
    cut to `max_seq_length`; as (input_ids, token_type_ids, masked_position, original id), or
    None when the masked position does not fit."""
    unk = vocab[UNK]
    flat = [vocab.get(t, unk) for word_pieces in pieces for t in word_pieces]
    position = 1 + sum(len(p) for p in pieces[:word])
    if position >= max_seq_length:
        return None
    first = [vocab[CLS], *flat, vocab[SEP]]
    own = first[position]
    first[position] = vocab[MASK]
    ids = (first + flat + [vocab[SEP]])[:max_seq_length]
    types = ([0] * len(first) + [1] * (len(flat) + 1))[:max_seq_length]
    return ids, types, position, own


@dataclasses.dataclass
class WordCandidates:
    """A sentence's basic-tokenized words and, for each replaceable word (by index, in word
    order), its candidate replacements (possibly none)."""

    words: list[str]
    candidates: dict[int, list[str]]


def tinybert_candidates(sentences: Sequence[str], splitter: WordSplitter, *, mlm: MaskedLMCandidates | None = None,
                        neighbours: NeighbourReplacer | None = None, batch_size: int = 256,
                        max_seq_length: int = 128) -> list[WordCandidates]:
    """Candidate replacements for every replaceable word (`is_valid_word`) of `sentences`.

    With `mlm`, single-piece words get its top tokens: one row per such word, all sentences'
    rows in batches of `batch_size` (1 = the reference's one pass per word), each cut to
    `max_seq_length` (at most the model's positions). Multi-piece words,
    and every word without `mlm`, get `neighbours` (the word, else its lower-case form; results
    title-cased for a title-case word, as the reference does); no `neighbours`: none.
    """
    if mlm is not None:
        max_seq_length = min(max_seq_length, mlm.max_positions)
    split = [splitter.split(sentence) for sentence in sentences]
    if neighbours is not None:
        valid = {w for words, _ in split for w in words if is_valid_word(w)}
        neighbours.precompute(sorted(valid | {w.lower() for w in valid}))
    results, rows, row_owners = [], [], []
    for s, (words, pieces) in enumerate(split):
        candidates: dict[int, list[str]] = {}
        for i, word in enumerate(words):
            if not is_valid_word(word):
                continue
            candidates[i] = []
            if mlm is not None and len(pieces[i]) == 1:
                row = masked_lm_row(pieces, i, splitter.vocab, max_seq_length)
                if row is not None:
                    rows.append(row)
                    row_owners.append((s, i))
            elif neighbours is not None:
                near = neighbours.neighbours(word) or neighbours.neighbours(word.lower())
                candidates[i] = [w.title() for w in near] if word.istitle() else near
        results.append(WordCandidates(words, candidates))
    if rows:
        for (s, i), tokens in zip(row_owners, mlm(rows, batch_size)):
            results[s].candidates[i] = tokens
    return results


def tinybert_augment_sentence(sentence: str, word_candidates: WordCandidates, num: int, p: float,
                              rng: np.random.Generator) -> list[str]:
    """Up to `num` distinct new sentences (words joined by spaces), in generation order: in each
    pass every word with candidates is, with probability p, replaced by one drawn uniformly.
    Never the original (as given or as its words joined)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    words = word_candidates.words
    slots = list(word_candidates.candidates.items())
    draws = rng.random((num, len(slots), 2)).tolist()  # (which candidate, whether to replace) per word and pass
    seen = {sentence, " ".join(sentence.split()), " ".join(words)}
    out = []
    for pass_draws in draws:
        new = list(words)
        for (i, candidates), (u_choice, u_replace) in zip(slots, pass_draws):
            if u_replace < p and candidates:
                new[i] = candidates[int(u_choice * len(candidates))]
        candidate = " ".join(new)
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out
