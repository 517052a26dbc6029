"""Robustness of a classifier to perturbed input: typos, dropped or replaced words, casing,
punctuation, on seeded copies of a labelled dev set.

Every perturbation is a pure function `(sentence, rate, rng[, neighbours]) -> sentence` of one
whitespace-tokenized (SST-2 style) sentence; `rate` is the probability that each word (token) is
touched, and every random draw comes from the numpy generator it is given:

- `char_swap`, `char_drop`, `char_insert`, `char_keyboard`: one typo in a word made of ASCII
  letters (swap two adjacent different letters, drop a letter from a word of two letters or more,
  insert a random letter, replace a letter by a QWERTY neighbour; the letter's case is kept);
- `word_dropout`: the word is removed (a sentence never loses all its words);
- `word_neighbour`: an alphabetic word becomes one of its nearest neighbours in an embedding
  space (an `augment.NeighbourReplacer`: word vectors or a BERT model's input embeddings, see
  `load_neighbours`); words outside the space stay;
- `casing`: the word becomes upper, lower or title case (one of those that differs from it);
- `punctuation`: a punctuation token (`.`, `,`, `--`, `...`) is deleted, a word gets one of
  `, . ! ? ;` inserted after it.

A sentence in which nothing changed comes back exactly as given (rate 0 is the identity).
`perturb` gives sentence i of a dataset its own generator, `SeedSequence((seed, perturbation
index, rate in millionths, i))`: the same seed gives the same perturbed dataset, perturbations
and rates draw independently of each other, and sentence i comes out the same whatever the other
sentences are (a prefix of a dataset is perturbed as the whole dataset perturbs it). `evaluate` measures accuracy (percent) on the clean and each perturbed copy.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Sequence

import numpy as np

from bertdistill.data.augment import NeighbourReplacer, Replacer
from bertdistill.export_format import CONFIG, HF_WEIGHTS, VOCAB
from bertdistill.metrics import accuracy, percent

DEFAULT_RATES = (0.1, 0.2)
LETTERS = string.ascii_lowercase
PUNCTUATION_MARKS = (",", ".", "!", "?", ";")
NEIGHBOUR_K = 10
# The input-embedding table in a Hugging Face BERT or MPNet folder or an export folder's model.safetensors.
EMBEDDING_NAMES = ("bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight",
                   "mpnet.embeddings.word_embeddings.weight")
NO_NEIGHBOURS = "no neighbour source given (a BERT model's input embeddings or word vectors)"

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Each letter's neighbours on a QWERTY keyboard: left and right in its row, and the keys
    above and below that touch it (rows are staggered by about half a key)."""
    position = {c: (r, i) for r, row in enumerate(_KEYBOARD_ROWS) for i, c in enumerate(row)}
    out = {}
    for c, (r, i) in position.items():
        near = []
        for other, (r2, j) in position.items():
            if other != c and ((r2 == r and abs(j - i) == 1) or (r2 == r - 1 and j in (i, i + 1))
                               or (r2 == r + 1 and j in (i - 1, i))):
                near.append(other)
        out[c] = "".join(sorted(near))
    return out


KEYBOARD = _keyboard_neighbours()


def _join(sentence: str, words: list[str], new: list[str]) -> str:
    """The sentence as given when no word changed, else the new words joined by spaces."""
    return sentence if new == words else " ".join(new)


def _typeable(word: str) -> bool:
    return word.isascii() and word.isalpha()


def _same_case(letter: str, like: str) -> str:
    return letter.upper() if like.isupper() else letter


def _typo(edit: Callable[[str, np.random.Generator], str]) -> Callable[[str, float, np.random.Generator], str]:
    """A perturbation applying `edit` to each word of ASCII letters with probability `rate`."""

    def perturbation(sentence: str, rate: float, rng: np.random.Generator) -> str:
        words = sentence.split()
        draws = rng.random(len(words)).tolist()
        new = [edit(word, rng) if u < rate and _typeable(word) else word for word, u in zip(words, draws)]
        return _join(sentence, words, new)

    perturbation.__name__ = edit.__name__.removeprefix("_")
    perturbation.__doc__ = edit.__doc__
    return perturbation


def _swap(word: str, rng: np.random.Generator) -> str:
    """Two adjacent, different letters swapped (a word without such a pair stays)."""
    places = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
    if not places:
        return word
    i = places[int(rng.integers(len(places)))]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _drop(word: str, rng: np.random.Generator) -> str:
    """One letter removed (a one-letter word stays)."""
    if len(word) < 2:
        return word
    i = int(rng.integers(len(word)))
    return word[:i] + word[i + 1:]


def _insert(word: str, rng: np.random.Generator) -> str:
    """A random letter (lower case) inserted anywhere, ends included."""
    i = int(rng.integers(len(word) + 1))
    return word[:i] + LETTERS[int(rng.integers(len(LETTERS)))] + word[i:]


def _keyboard(word: str, rng: np.random.Generator) -> str:
    """One letter replaced by one of its QWERTY neighbours (same case)."""
    i = int(rng.integers(len(word)))
    near = KEYBOARD[word[i].lower()]
    return word[:i] + _same_case(near[int(rng.integers(len(near)))], word[i]) + word[i + 1:]


char_swap = _typo(_swap)
char_drop = _typo(_drop)
char_insert = _typo(_insert)
char_keyboard = _typo(_keyboard)


def word_dropout(sentence: str, rate: float, rng: np.random.Generator) -> str:
    """Each word removed with probability `rate`; when all would go, one of them (drawn) stays."""
    words = sentence.split()
    keep = (rng.random(len(words)) >= rate).tolist()
    if words and not any(keep):
        keep[int(rng.integers(len(words)))] = True
    return _join(sentence, words, [word for word, kept in zip(words, keep) if kept])


def word_neighbour(sentence: str, rate: float, rng: np.random.Generator, neighbours: Replacer) -> str:
    """Each alphabetic word replaced with probability `rate` by a neighbour `neighbours` draws for
    its lower-case form (title-cased for a title-case word, upper-cased for an upper-case word);
    a word outside the space stays."""
    words = sentence.split()
    draws = rng.random(len(words)).tolist()
    positions = [i for i, (word, u) in enumerate(zip(words, draws)) if u < rate and word.isalpha()]
    new = list(words)
    if positions:
        lowered = [word.lower() for word in words]
        for i, replacement in zip(positions, neighbours.sample(lowered, positions, rng)):
            if replacement is not None:
                word = words[i]
                new[i] = (replacement.upper() if word.isupper() and len(word) > 1 else
                          replacement.title() if word.istitle() else replacement)
    return _join(sentence, words, new)


def casing(sentence: str, rate: float, rng: np.random.Generator) -> str:
    """Each word, with probability `rate`, in upper, lower or title case: one of those that
    differs from it, drawn uniformly (a word without cased letters stays)."""
    words = sentence.split()
    draws = rng.random(len(words)).tolist()
    new = []
    for word, u in zip(words, draws):
        if u < rate:
            forms = [form for form in dict.fromkeys((word.upper(), word.lower(), word.title()))
                     if form != word and form.lower() == word.lower()]
            if forms:
                word = forms[int(rng.integers(len(forms)))]
        new.append(word)
    return _join(sentence, words, new)


def is_punctuation(token: str) -> bool:
    """A token made only of ASCII punctuation characters (`.`, `--`, `...`, `!`)."""
    return bool(token) and all(c in string.punctuation for c in token)


def punctuation(sentence: str, rate: float, rng: np.random.Generator) -> str:
    """Each token, with probability `rate`: a punctuation token is deleted, a word gets one of
    `, . ! ? ;` (drawn) inserted after it. A sentence of punctuation alone keeps one token."""
    words = sentence.split()
    draws = rng.random(len(words)).tolist()
    new = []
    for word, u in zip(words, draws):
        if u < rate and is_punctuation(word):
            continue
        new.append(word)
        if u < rate:
            new.append(PUNCTUATION_MARKS[int(rng.integers(len(PUNCTUATION_MARKS)))])
    if words and not new:
        new = [words[0]]
    return _join(sentence, words, new)


PERTURBATIONS: dict[str, Callable] = {
    "char_swap": char_swap,
    "char_drop": char_drop,
    "char_insert": char_insert,
    "char_keyboard": char_keyboard,
    "word_dropout": word_dropout,
    "word_neighbour": word_neighbour,
    "casing": casing,
    "punctuation": punctuation,
}
NEEDS_NEIGHBOURS = frozenset({"word_neighbour"})


def _check(name: str, rate: float) -> None:
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a probability in [0, 1], got {rate!r}")


def rng_for(seed: int, name: str, rate: float, index: int) -> np.random.Generator:
    """The generator of sentence `index` under perturbation `name` at `rate`."""
    key = [seed, list(PERTURBATIONS).index(name), int(round(rate * 1_000_000)), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def perturb(sentences: Sequence[str], name: str, rate: float, seed: int, neighbours: Replacer | None = None
            ) -> list[str]:
    """A perturbed copy of `sentences` (see the module docstring); `neighbours` is required by
    `word_neighbour` (a ValueError without it) and ignored by the others."""
    _check(name, rate)
    function = PERTURBATIONS[name]
    if name in NEEDS_NEIGHBOURS:
        if neighbours is None:
            raise ValueError(f"{name} needs neighbours: {NO_NEIGHBOURS}")
        if hasattr(neighbours, "precompute"):  # every word's neighbours in a few matrix products
            neighbours.precompute(sorted({w.lower() for s in sentences for w in s.split() if w.isalpha()}))
        return [function(s, rate, rng_for(seed, name, rate, i), neighbours) for i, s in enumerate(sentences)]
    return [function(s, rate, rng_for(seed, name, rate, i)) for i, s in enumerate(sentences)]


def evaluate(predict_labels: Callable[[list[str]], np.ndarray], sentences: Sequence[str], labels: Sequence, *,
             seed: int, rates: Sequence[float] = DEFAULT_RATES, names: Sequence[str] | None = None,
             neighbours: Replacer | None = None) -> dict:
    """Accuracy (percent) of `predict_labels` (texts -> labels, comparable with `labels`) on
    `sentences` and on each perturbed copy (`names`, default all, at each of `rates`):

        {"clean": 89.68, "examples": 872,
         "perturbations": {name: {str(rate): {"accuracy": a, "drop": clean - a, "changed": c}}},
         "skipped": {name: reason}}

    `changed` is the percent of sentences the perturbation altered. `word_neighbour` without
    `neighbours` is skipped."""
    sentences, labels = list(sentences), list(labels)
    if not sentences:
        raise ValueError("no sentences to evaluate on")
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")
    names = list(PERTURBATIONS) if names is None else list(names)
    for name in names:
        for rate in rates:
            _check(name, rate)
    clean = percent(accuracy(predict_labels(sentences), labels))
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name in NEEDS_NEIGHBOURS and neighbours is None:
            skipped[name] = NO_NEIGHBOURS
            continue
        results[name] = {}
        for rate in rates:
            perturbed = perturb(sentences, name, rate, seed, neighbours)
            score = percent(accuracy(predict_labels(perturbed), labels))
            changed = 100.0 * sum(a != b for a, b in zip(perturbed, sentences)) / len(sentences)
            results[name][str(rate)] = {"accuracy": score, "drop": clean - score, "changed": changed}
    return {"clean": clean, "examples": len(sentences), "perturbations": results, "skipped": skipped}


def load_neighbours(*, model_dir: str | None = None, word_vectors: str | None = None, k: int = NEIGHBOUR_K,
                    max_words: int | None = None) -> NeighbourReplacer | None:
    """The nearest-neighbour space of `word_neighbour`: the input embeddings of a BERT or MPNet model
    folder (Hugging Face or export: `vocab.txt` + `model.safetensors`, whole-word tokens only),
    or a GloVe/word2vec text file (its first `max_words` vectors when given); None without either.
    Reads only the embedding table (no TensorFlow)."""
    if model_dir and word_vectors:
        raise ValueError("pass a model folder or word vectors, not both")
    if word_vectors:
        return NeighbourReplacer.from_word_vectors_file(word_vectors, k=k, max_words=max_words)
    if not model_dir:
        return None
    from bertdistill.errors import ConfigError, MissingFileError
    from bertdistill.files import safetensors_file
    from bertdistill.data.tokenization import load_vocab

    weights = os.path.join(model_dir, HF_WEIGHTS)
    if not os.path.isfile(weights):
        raise MissingFileError(f"{model_dir} has no {HF_WEIGHTS}: expected a BERT model folder "
                               f"({CONFIG}, {HF_WEIGHTS}, {VOCAB})")
    vocab = load_vocab(os.path.join(model_dir, VOCAB))
    with safetensors_file(weights) as f:
        name = next((name for name in EMBEDDING_NAMES if name in f.keys()), None)
        if name is None:
            raise ConfigError(f"{weights} has no input-embedding table ({' or '.join(EMBEDDING_NAMES)})")
        table = f.get_tensor(name)
    if table.ndim != 2 or max(vocab.values()) >= len(table):
        raise ConfigError(f"{weights}: embedding table of shape {table.shape} does not fit vocab.txt "
                          f"({max(vocab.values()) + 1} tokens)")
    return NeighbourReplacer.from_token_embeddings(vocab, table, k=k)
