"""Data augmentation (Tang et al. 2019): masking, replacement, n-grams, replacers, determinism."""
import collections
import sys

import numpy as np
import pytest

from bertdistill.data.augment import (AugmentConfig, NeighbourReplacer, PosReplacer, augment_sentence, nltk_pos_tagger,
                          rng_for)

SENTENCE = "the quick brown fox jumps over the lazy dog near a river bank"
WORDS = SENTENCE.split()
ONLY_MASK = AugmentConfig(p_mask=0.3, p_replace=0.0, p_ngram=0.0)
ONLY_REPLACE = AugmentConfig(p_mask=0.0, p_replace=0.5, p_ngram=0.0)

# A tiny space: three clusters of near-parallel vectors.
SPACE_WORDS = ["quick", "fast", "rapid", "swift", "dog", "hound", "puppy", "river", "stream", "creek"]
SPACE_VECTORS = np.array([[1, 0.00, 0], [1, 0.05, 0], [1, 0.10, 0], [1, 0.30, 0],
                          [0, 1, 0.00], [0, 1, 0.05], [0, 1, 0.10],
                          [0.1, 0, 1], [0.05, 0, 1], [0.0, 0, 1]], np.float32)
NEAREST_2 = {"quick": {"fast", "rapid"}, "fast": {"quick", "rapid"}, "rapid": {"fast", "quick"},
             "swift": {"rapid", "fast"}, "dog": {"hound", "puppy"}, "hound": {"dog", "puppy"},
             "puppy": {"hound", "dog"}, "river": {"stream", "creek"}, "stream": {"river", "creek"},
             "creek": {"stream", "river"}}


def space(k=2):
    return NeighbourReplacer(SPACE_WORDS, SPACE_VECTORS, k=k)


def augment(config, seed=0, num=20, replacer=None, sentence=SENTENCE):
    return augment_sentence(sentence, num, np.random.default_rng(seed), config, replacer)


def test_mask_everything():
    out = augment(AugmentConfig(p_mask=1.0, p_replace=0.0, p_ngram=0.0))
    assert out == [" ".join(["[MASK]"] * len(WORDS))]  # every pass gives the same sentence: one kept


def test_mask_some_words():
    out = augment(ONLY_MASK, num=30)
    assert len(out) > 20
    masked = 0
    for sentence in out:
        words = sentence.split()
        assert len(words) == len(WORDS)
        for new, old in zip(words, WORDS):
            assert new in (old, "[MASK]")
            masked += new == "[MASK]"
    assert 0.15 < masked / (len(out) * len(WORDS)) < 0.45


def test_custom_mask_token():
    out = augment(AugmentConfig(p_mask=1.0, p_replace=0.0, p_ngram=0.0, mask_token="<m>"))
    assert out == [" ".join(["<m>"] * len(WORDS))]


def test_replace_with_neighbours():
    out = augment(ONLY_REPLACE, replacer=space(k=2), num=30)
    assert len(out) > 10
    replaced = 0
    for sentence in out:
        words = sentence.split()
        assert len(words) == len(WORDS)
        for new, old in zip(words, WORDS):
            if old in NEAREST_2:
                assert new == old or new in NEAREST_2[old]
                replaced += new != old
            else:
                assert new == old  # outside the space: unchanged
    assert replaced > 0


def test_mask_and_replace_split_the_draw():
    out = augment(AugmentConfig(p_mask=0.5, p_replace=0.5, p_ngram=0.0), replacer=space(k=2), num=40)
    masked = in_space = 0
    for sentence in out:
        for new, old in zip(sentence.split(), WORDS):
            if old in NEAREST_2:
                assert new == "[MASK]" or new in NEAREST_2[old]  # every word is masked or replaced
                in_space += 1
                masked += new == "[MASK]"
            else:
                assert new in ("[MASK]", old)
    assert 0.3 < masked / in_space < 0.7


def test_replace_draw_without_replacer_keeps_words():
    assert augment(AugmentConfig(p_mask=0.0, p_replace=1.0, p_ngram=0.0)) == []


def test_ngram_only():
    config = AugmentConfig(p_mask=0.0, p_replace=0.0, p_ngram=1.0, max_ngram=4)
    out = augment(config, num=50)
    assert len(out) > 10
    lengths = set()
    for sentence in out:
        words = sentence.split()
        assert 1 <= len(words) <= 4
        assert any(WORDS[i:i + len(words)] == words for i in range(len(WORDS)))
        lengths.add(len(words))
    assert lengths == {1, 2, 3, 4}


def test_ngram_not_longer_than_sentence():
    config = AugmentConfig(p_mask=0.0, p_replace=0.0, p_ngram=1.0, max_ngram=5)
    out = augment(config, num=50, sentence="a b")
    assert set(out) == {"a", "b"}  # n >= 2 keeps the whole (original) sentence: discarded


def test_deterministic():
    config = AugmentConfig(p_mask=0.2, p_replace=0.2, p_ngram=0.3)
    first = augment(config, seed=3, replacer=space())
    assert first == augment(config, seed=3, replacer=space())
    assert first != augment(config, seed=4, replacer=space())


def test_no_duplicates_and_never_the_original():
    config = AugmentConfig(p_mask=0.05, p_replace=0.0, p_ngram=0.0)
    out = augment(config, num=100, sentence="  a   short  one ")
    assert len(out) == len(set(out))
    assert "a short one" not in out
    assert 0 < len(out) < 100  # with 3 words and low masking, most passes repeat
    assert all(" ".join(s.split()) == s for s in out)  # re-joined with single spaces


def test_empty_sentence():
    assert augment(AugmentConfig(), sentence="   ") == []


def test_rng_for_matches_alone_and_in_a_loop():
    config = AugmentConfig(p_mask=0.2, p_replace=0.2, p_ngram=0.3)
    sentences = [SENTENCE, "a river near the dog", "swift creek", SENTENCE]
    whole = [augment_sentence(s, 5, rng_for(7, i), config, space()) for i, s in enumerate(sentences)]
    assert augment_sentence(sentences[2], 5, rng_for(7, 2), config, space()) == whole[2]
    assert whole[0] != whole[3]  # the same sentence at another index gets other draws
    assert np.array_equal(rng_for(7, 2).random(3), np.random.default_rng([7, 2]).random(3))


@pytest.mark.parametrize("kwargs, message", [
    ({"p_mask": -0.1}, "p_mask"), ({"p_replace": 1.5}, "p_replace"), ({"p_ngram": 2.0}, "p_ngram"),
    ({"p_mask": 0.6, "p_replace": 0.5}, "p_mask \\+ p_replace"), ({"max_ngram": 0}, "max_ngram")])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)


def test_config_limits_are_valid():
    AugmentConfig(p_mask=0.7, p_replace=0.3, p_ngram=1.0, max_ngram=1)


def test_neighbours():
    replacer = space(k=2)
    for word, nearest in NEAREST_2.items():
        assert set(replacer.neighbours(word)) == nearest
    assert replacer.neighbours("quick") == ["fast", "rapid"]  # nearest first
    assert replacer.neighbours("unknown") == []
    everything = space(k=100).neighbours("dog")  # k beyond the space: every other word
    assert sorted(everything) == sorted(set(SPACE_WORDS) - {"dog"})
    assert everything[:2] == ["hound", "puppy"]


def test_neighbour_sample_is_uniform_and_skips_unknown_words():
    replacer = space(k=3)
    words = ["quick", "unknown"] * 500
    positions = list(range(len(words)))
    out = replacer.sample(words, positions, np.random.default_rng(0))
    assert out[1::2] == [None] * 500
    counts = collections.Counter(out[0::2])
    assert set(counts) == {"fast", "rapid", "swift"}
    assert min(counts.values()) > 120


def test_precompute_agrees_with_on_demand():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(700)]  # more than one chunk
    vectors = rng.normal(size=(700, 16))
    precomputed = NeighbourReplacer(words, vectors, k=5)
    precomputed.precompute(words + ["unknown"])
    on_demand = NeighbourReplacer(words, vectors, k=5)
    for word in words[::37]:
        assert on_demand.neighbours(word) == precomputed.neighbours(word)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = unit @ unit[words.index(word)]
        similarity[words.index(word)] = -np.inf
        assert precomputed.neighbours(word) == [words[j] for j in np.argsort(-similarity)[:5]]
    sample_words = words[:50]
    assert (precomputed.sample(sample_words, range(50), np.random.default_rng(1))
            == on_demand.sample(sample_words, range(50), np.random.default_rng(1)))


def test_neighbour_replacer_validation():
    with pytest.raises(ValueError, match="one vector per word"):
        NeighbourReplacer(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="distinct"):
        NeighbourReplacer(["a", "a"], np.eye(2))
    with pytest.raises(ValueError, match="at least two"):
        NeighbourReplacer(["a"], np.eye(1))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_from_glove_file(tmp_path):
    path = write(tmp_path / "glove.txt", "".join(
        f"{w} {' '.join(f'{v:.3f}' for v in vec)}\n" for w, vec in zip(SPACE_WORDS, SPACE_VECTORS)))
    replacer = NeighbourReplacer.from_word_vectors_file(path, k=2)
    for word, nearest in NEAREST_2.items():
        assert set(replacer.neighbours(word)) == nearest
    limited = NeighbourReplacer.from_word_vectors_file(path, k=5, max_words=4)
    assert set(limited.neighbours("quick")) == {"fast", "rapid", "swift"}
    assert limited.neighbours("dog") == []
    filtered = NeighbourReplacer.from_word_vectors_file(path, k=5, vocabulary={"dog", "puppy", "creek", "nope"})
    assert set(filtered.neighbours("dog")) == {"puppy", "creek"}
    assert filtered.neighbours("hound") == []


def test_from_word2vec_file(tmp_path):
    path = write(tmp_path / "w2v.txt", "4 3\nquick 1 0 0\nfast 1 0.1 0 \ndog 0 1 0\nhound 0 1 0.1\n")
    replacer = NeighbourReplacer.from_word_vectors_file(path, k=1)
    assert replacer.neighbours("quick") == ["fast"]
    assert replacer.neighbours("hound") == ["dog"]
    assert replacer.neighbours("4") == []


@pytest.mark.parametrize("text, line", [
    ("quick 1 0 0\nfast 1 0\n", 2),
    ("4 3\nquick 1 0 0\nfast 1 0.1 0\ndog 0 one 0\n", 4),
    ("quick\n", 1)])
def test_malformed_vectors_file(tmp_path, text, line):
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(ValueError, match=f"{path}:{line}:"):
        NeighbourReplacer.from_word_vectors_file(path)


def test_vectors_file_without_vocabulary_words(tmp_path):
    path = write(tmp_path / "glove.txt", "quick 1 0\nfast 1 1\n")
    with pytest.raises(ValueError, match="no word vectors"):
        NeighbourReplacer.from_word_vectors_file(path, vocabulary={"dog"})


def test_from_token_embeddings():
    tokens = ["[PAD]", "[unused12]", "[CLS]", "[SEP]", "[MASK]", "!", "1999", "good", "##ing", "great", "bad", "##s"]
    vocab = {token: i for i, token in enumerate(tokens)}
    embeddings = np.ones((len(tokens), 2), np.float32)
    embeddings[vocab["good"]] = [1, 0]
    embeddings[vocab["great"]] = [1, 0.1]
    embeddings[vocab["bad"]] = [-1, 0]
    replacer = NeighbourReplacer.from_token_embeddings(vocab, embeddings, k=10)
    assert set(replacer.neighbours("good")) == {"great", "bad"}
    assert replacer.neighbours("good")[0] == "great"
    for token in ["[PAD]", "[unused12]", "[MASK]", "!", "1999", "##ing", "##s"]:
        assert replacer.neighbours(token) == []


def test_an_mpnet_vocabularys_special_tokens_are_never_replacement_words():
    """MPNet's <s>, </s>, <pad>, <unk>, <mask> have letters but are no words: a neighbour drawn
    from them would put `</s>` into the transfer set's text."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "good", "great", "<mask>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    embeddings = np.tile(np.array([[1.0, 0.0]], np.float32), (len(tokens), 1))  # every token equally near
    replacer = NeighbourReplacer.from_token_embeddings(vocab, embeddings, k=10)
    assert replacer.neighbours("good") == ["great"]


TAGS = {"the": "DT", "a": "DT", "this": "DT", "dog": "NN", "cat": "NN", "movie": "NN", "runs": "VB"}


def tag_fn(words):
    return [TAGS.get(word, "X") for word in words]


def test_pos_replacer_same_tag_unigram_weighted():
    corpus = [["the", "dog", "runs"]] * 99 + [["the", "cat"], ["a", "movie"], ["this"]]
    replacer = PosReplacer(tag_fn, corpus)
    sentence = ["a", "movie", "runs", "!"]
    rng = np.random.default_rng(0)
    draws = [replacer.sample(sentence, [0, 1, 2, 3], rng) for _ in range(2000)]
    determiners = collections.Counter(d[0] for d in draws)
    nouns = collections.Counter(d[1] for d in draws)
    assert set(determiners) == {"the", "this"} and determiners["the"] > 1900  # 99:1, never "a" itself
    assert set(nouns) == {"dog", "cat"} and nouns["dog"] > 1900
    assert {d[2] for d in draws} == {None}  # "runs" is the only VB
    assert {d[3] for d in draws} == {None}  # no word with tag X in the corpus


def test_pos_replacer_in_augmentation():
    corpus = [["the", "dog"], ["a", "cat"], ["this", "movie"]]
    out = augment(ONLY_REPLACE, replacer=PosReplacer(tag_fn, corpus), sentence="the dog runs")
    assert out
    for sentence in out:
        det, noun, verb = sentence.split()
        assert TAGS[det] == "DT" and TAGS[noun] == "NN" and verb == "runs"


def test_pos_replacer_rejects_wrong_tag_count():
    with pytest.raises(ValueError, match="tags"):
        PosReplacer(lambda words: ["NN"], [["two", "words"]])


def test_nltk_pos_tagger_without_nltk(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.tag", None)
    assert nltk_pos_tagger() is None
