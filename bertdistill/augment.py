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

_CHUNK = 256  # query rows per similarity product: bounds memory to a few [256, vocabulary] arrays


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities of the three rules and the token that masks a word."""

    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    mask_token: str = "[MASK]"

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
        """A BERT teacher's own input embeddings, whole-word tokens only: no `##` pieces, no
        bracketed tokens (`[PAD]`, `[unused12]`), at least one letter."""
        words = [token for token in vocab
                 if not token.startswith("##") and not (token.startswith("[") and token.endswith("]"))
                 and any(c.isalpha() for c in token)]
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
