"""tf.data pipeline: shapes, masks, bucketing completeness, order, seeds, padding efficiency."""
import collections

import numpy as np
import pytest

from bertdistill.data import pipeline
from bertdistill.data.data import InputExample
from bertdistill.data.tokenization import Tokenizer
from tests.bert_fixtures import write_vocab

WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot"]


@pytest.fixture
def tokenizer(tmp_path):
    return Tokenizer(write_vocab(tmp_path / "vocab.txt"))


def examples(n: int, seed: int = 0) -> list[InputExample]:
    rng = np.random.default_rng(seed)
    return [InputExample(f"train-{i}", " ".join(rng.choice(WORDS, size=rng.integers(1, 20))), None, str(i % 2))
            for i in range(n)]


def test_features_and_eval_batches_keep_order_and_mask(tokenizer):
    exs = examples(10)
    features = pipeline.convert_examples_to_features(exs, tokenizer, ["0", "1"], max_seq_length=12)
    assert features.label_ids.tolist() == [i % 2 for i in range(10)]
    assert features.lengths.max() <= 12
    batches = list(pipeline.make_dataset(features, batch_size=4, is_training=False))
    assert [int(y.shape[0]) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert set(x) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == "int32" and v.shape == x["input_ids"].shape for v in x.values())
    assert y.dtype == "int32"
    for row, example in zip(x["input_ids"].numpy(), exs):
        expected, _ = tokenizer.encode(example.text_a, max_seq_length=12)
        assert row[:len(expected)].tolist() == expected and not row[len(expected):].any()
    np.testing.assert_array_equal(x["attention_mask"], x["input_ids"] != 0)
    assert x["input_ids"].shape[1] == max(features.lengths[:4])


def test_bucketing_keeps_every_example_once_with_its_extras(tokenizer):
    features = pipeline.convert_examples_to_features(examples(200), tokenizer, ["0", "1"], 24)
    ids = np.arange(200, dtype=np.int64)
    dataset = pipeline.make_dataset(features, batch_size=8, is_training=True, seed=3, extras={"example_id": ids})
    seen = collections.Counter()
    for x, y in dataset:
        lengths = x["attention_mask"].numpy().sum(1)
        np.testing.assert_array_equal(lengths, features.lengths[y["example_id"].numpy()])
        np.testing.assert_array_equal(y["label_ids"], features.label_ids[y["example_id"].numpy()])
        seen.update(y["example_id"].numpy().tolist())
    assert seen == collections.Counter(range(200))


def test_shuffle_is_seeded_and_reshuffles_each_epoch(tokenizer):
    features = pipeline.convert_examples_to_features(examples(64), tokenizer, ["0", "1"], 24)
    ids = {"example_id": np.arange(64)}

    def order(seed):
        dataset = pipeline.make_dataset(features, batch_size=8, is_training=True, seed=seed, extras=ids)
        return [[int(i) for _, y in dataset for i in y["example_id"]] for _ in range(2)]

    first, second = order(1), order(1)
    assert first == second
    assert first[0] != first[1]
    assert order(2)[0] != first[0]


def test_bucketed_padding_beats_static(tokenizer):
    features = pipeline.convert_examples_to_features(examples(300), tokenizer, ["0", "1"], 32)
    bucketed = pipeline.make_dataset(features, batch_size=16, is_training=True)
    static = pipeline.make_dataset(features, batch_size=16, is_training=True, static_padding=True, max_seq_length=32)
    assert pipeline.padding_efficiency(bucketed) > 0.85 > pipeline.padding_efficiency(static) + 0.2
    x, _ = next(iter(static))
    assert x["input_ids"].shape[1] == 32


def test_static_padding_with_drop_remainder_has_static_shapes(tokenizer):
    features = pipeline.convert_examples_to_features(examples(20), tokenizer, ["0", "1"], 16)
    dataset = pipeline.make_dataset(features, batch_size=8, is_training=False, static_padding=True,
                                    max_seq_length=16, drop_remainder=True)
    assert dataset.element_spec[0]["input_ids"].shape.as_list() == [8, 16]
    assert sum(1 for _ in dataset) == 2


def test_pairs_unlabeled_and_errors(tokenizer):
    pair = [InputExample("t-0", "the movie", "was fun"), InputExample("t-1", "bad", "dull plot")]
    features = pipeline.convert_examples_to_features(pair, tokenizer, ["0", "1"], 16)
    x, y = next(iter(pipeline.make_dataset(features, batch_size=2, is_training=False)))
    assert x["token_type_ids"].numpy()[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert y.numpy().tolist() == [-1, -1]
    with pytest.raises(ValueError, match="example t-9: unknown label 'x'"):
        pipeline.convert_examples_to_features([InputExample("t-9", "bad", None, "x")], tokenizer, ["0", "1"], 8)
    with pytest.raises(ValueError, match="extra 'logits' has 3 rows for 2 examples"):
        pipeline.make_dataset(features, batch_size=2, is_training=False, extras={"logits": np.zeros((3, 2))})


@pytest.mark.parametrize("is_training, drop_remainder", [(True, False), (True, True), (False, False), (False, True)])
def test_num_batches_matches_one_pass(tokenizer, is_training, drop_remainder):
    features = pipeline.convert_examples_to_features(examples(150), tokenizer, ["0", "1"], 24)
    kwargs = dict(batch_size=8, is_training=is_training, max_seq_length=24, drop_remainder=drop_remainder)
    assert pipeline.num_batches(features, **kwargs) == sum(1 for _ in pipeline.make_dataset(features, **kwargs))
