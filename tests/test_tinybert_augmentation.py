"""TinyBERT's augmentation: the MLM head (and its checkpoint names), candidates (MLM batched and
one pass per word, neighbours), generation, shards, the script end to end, and the reader of
its output."""

import numpy as np
import pytest

from bertdistill import files

from bertdistill.data import augment

from bertdistill.distill import transfer_set

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier, BertEncoder, BertMaskedLM, checkpoint_variables
from bertdistill.data.data import DataFormatError
from bertdistill.data.tokenization import Tokenizer
from tests.bert_fixtures import TINY_VOCAB, tiny_batch, tiny_config, write_vocab
from tests.conftest import REPO
from tests.scripts import run_script

SCRIPT = "tinybert/data_augmentation.py"
# Whole-word tokens of TINY_VOCAB an MLM may propose (no specials, no ## pieces).
PROPOSABLE = {"the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "film", "plot", "a", ".", ","}
SENTENCES = ["the movie was great", "a dull plot , not fun .", "films were good !", "The Film was bad",
             "great great fun", "the plot", "not good , not bad", "a movie"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny BertMaskedLM with a non-zero output bias, saved as a Hugging Face BertForMaskedLM folder."""
    root = tmp_path_factory.mktemp("tinybert_aug")
    vocab_file = write_vocab(root / "vocab.txt")
    model = BertMaskedLM(BertEncoder(tiny_config()))
    model.head.output_bias.assign(np.random.default_rng(0).normal(size=len(TINY_VOCAB)).astype(np.float32))
    checkpoints.save_hf_masked_lm(model, str(root / "mlm"), vocab_file, do_lower_case=True)
    vocab = Tokenizer(vocab_file).vocab
    return {"root": root, "model": model, "vocab": vocab, "vocab_file": vocab_file,
            "splitter": augment.WordSplitter(Tokenizer(vocab_file)),
            "mlm": augment.MaskedLMCandidates(model, vocab, top_k=5)}


def masked_batch():
    return {**tiny_batch(), "masked_positions": np.array([[1, 4], [3, 0]], "int32")}


def test_masked_lm_logits_are_the_tied_head_over_gathered_positions(tiny):
    model = tiny["model"]
    batch = masked_batch()
    logits = model(batch).numpy()
    assert logits.shape == (2, 2, len(TINY_VOCAB)) and logits.dtype == np.float32
    sequence = model.encoder({k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    gathered = np.take_along_axis(sequence["sequence_output"].numpy(), batch["masked_positions"][..., None], axis=1)
    head = model.head
    x = gathered @ head.transform.kernel.numpy() + head.transform.bias.numpy()
    x = 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    x = x * head.transform_layer_norm.gamma.numpy() + head.transform_layer_norm.beta.numpy()
    expected = x @ model.encoder.embeddings.word_embeddings.embeddings.numpy().T + head.output_bias.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert len(model.weights) == len(model.encoder.weights) + 5  # the projection is the embedding table itself
    clone = BertMaskedLM.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_masked_lm_checkpoint_names_and_hf_names():
    names = checkpoint_variables(BertMaskedLM(BertEncoder(tiny_config())))
    assert {n for n in names if n.startswith("cls/")} == {
        "cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
        "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/transform/LayerNorm/beta",
        "cls/predictions/output_bias"}
    for name in names:
        hf_name, transposed = checkpoints.google_to_hf_name(name)
        assert checkpoints.hf_to_google_name(hf_name) == (name, transposed)
    assert checkpoints.hf_to_google_name("cls.predictions.transform.dense.weight") == (
        "cls/predictions/transform/dense/kernel", True)
    assert checkpoints.hf_to_google_name("cls.predictions.transform.LayerNorm.weight") == (
        "cls/predictions/transform/LayerNorm/gamma", False)
    assert checkpoints.hf_to_google_name("cls.predictions.bias") == ("cls/predictions/output_bias", False)
    assert checkpoints.hf_to_google_name("cls.predictions.decoder.bias") == ("cls/predictions/output_bias", False)


def test_hf_folder_with_head_reloads_to_the_same_logits(tiny):
    from safetensors.numpy import load_file

    stored = load_file(str(tiny["root"] / "mlm" / "model.safetensors"))
    assert {"cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.bias"} <= set(stored) and "cls.predictions.decoder.weight" not in stored
    np.testing.assert_array_equal(stored["cls.predictions.transform.dense.weight"],
                                  tiny["model"].head.transform.kernel.numpy().T)  # HF stores [out, in]
    pretrained = checkpoints.resolve_pretrained(str(tiny["root"] / "mlm"))
    assert checkpoints.has_mlm_head(pretrained)
    reloaded = checkpoints.load_masked_lm(pretrained)
    np.testing.assert_allclose(reloaded(masked_batch()).numpy(), tiny["model"](masked_batch()).numpy(), atol=1e-6)
    # A decoder weight (HF's tied copy of the embeddings) is no "unexpected" weight.
    pretrained.weights["cls/predictions/decoder/kernel"] = np.zeros((8, 20), np.float32)
    assert checkpoints.restore_weights(BertMaskedLM(BertEncoder(tiny_config())), pretrained).unexpected == []


def test_a_classifier_has_no_mlm_head(tiny, tmp_path):
    checkpoints.save_hf_folder(BertClassifier(BertEncoder(tiny_config()), 2), str(tmp_path / "clf"),
                               str(tiny["root"] / "vocab.txt"), ["0", "1"], True)
    pretrained = checkpoints.resolve_pretrained(str(tmp_path / "clf"))
    assert not checkpoints.has_mlm_head(pretrained)
    with pytest.raises(ValueError, match="no masked-LM head"):
        checkpoints.load_masked_lm(pretrained)


def test_valid_words_and_stopwords():
    assert augment.is_valid_word("movie") and augment.is_valid_word("Movie")
    for word in ("the", "The", "not", "was", "a", "it's", "3d", "co-star", ",", "café", "don't"):
        assert not augment.is_valid_word(word), word
    assert {"i", "me", "wouldn't", "'re"} <= augment.TINYBERT_STOPWORDS and len(augment.TINYBERT_STOPWORDS) == 173


def test_word_splitter_is_bert_basic_tokenization(tiny):
    words, pieces = tiny["splitter"].split("The movie's plots, fun!")
    assert words == ["the", "movie", "'", "s", "plots", ",", "fun", "!"]
    assert pieces == [["the"], ["movie"], ["[UNK]"], ["[UNK]"], ["plot", "##s"], [","], ["fun"], ["[UNK]"]]
    tokenizer = Tokenizer(str(tiny["root"] / "vocab.txt"))
    assert [p for word in pieces for p in word] == tokenizer.tokenize("The movie's plots, fun!")


def test_masked_lm_row_is_the_references_input(tiny):
    vocab = tiny["vocab"]
    _, pieces = tiny["splitter"].split("the movie was great")
    ids, types, position, own = augment.masked_lm_row(pieces, 1, vocab, max_seq_length=16)
    tokens = [TINY_VOCAB[i] for i in ids]
    assert tokens == ["[CLS]", "the", "[MASK]", "was", "great", "[SEP]", "the", "movie", "was", "great", "[SEP]"]
    assert types == [0] * 6 + [1] * 5 and position == 2 and TINY_VOCAB[own] == "movie"
    ids, types, _, _ = augment.masked_lm_row(pieces, 3, vocab, max_seq_length=8)
    assert len(ids) == len(types) == 8 and types == [0] * 6 + [1] * 2
    assert augment.masked_lm_row(pieces, 3, vocab, max_seq_length=4) is None  # the mask would be cut off


def test_mlm_candidates_exclude_the_word_pieces_and_special_tokens(tiny):
    everything = augment.MaskedLMCandidates(tiny["model"], tiny["vocab"], top_k=20)
    result = augment.tinybert_candidates(["the movie was great , films !"], tiny["splitter"], mlm=everything,
                                         max_seq_length=16)[0]
    assert result.words == ["the", "movie", "was", "great", ",", "films", "!"]
    assert set(result.candidates) == {1, 3, 5}  # stopwords and punctuation have none
    assert set(result.candidates[1]) == PROPOSABLE - {"movie"} and len(result.candidates[1]) == 13
    assert set(result.candidates[3]) == PROPOSABLE - {"great"}
    assert result.candidates[5] == []  # multi-piece, no neighbours given
    top5 = augment.tinybert_candidates(["the movie was great"], tiny["splitter"], mlm=tiny["mlm"])[0]
    assert len(top5.candidates[1]) == 5 and set(top5.candidates[1]) < set(result.candidates[1])
    assert all(tiny["vocab"][a] < tiny["vocab"][b] for a, b in zip(top5.candidates[1], top5.candidates[1][1:]))


def test_batched_equals_one_pass_per_word_and_any_grouping(tiny):
    kwargs = dict(mlm=tiny["mlm"], max_seq_length=16)
    batched = augment.tinybert_candidates(SENTENCES, tiny["splitter"], batch_size=64, **kwargs)
    single = augment.tinybert_candidates(SENTENCES, tiny["splitter"], batch_size=1, **kwargs)
    threes = augment.tinybert_candidates(SENTENCES, tiny["splitter"], batch_size=3, **kwargs)
    sliced = [c for s in (SENTENCES[:3], SENTENCES[3:]) for c in
              augment.tinybert_candidates(s, tiny["splitter"], batch_size=5, **kwargs)]
    assert batched == single == threes == sliced
    assert sum(len(v) for c in batched for v in c.candidates.values()) > 40

    def outputs(candidates):
        return [augment.tinybert_augment_sentence(s, c, 20, 0.4, augment.rng_for(3, i))
                for i, (s, c) in enumerate(zip(SENTENCES, candidates))]

    assert outputs(batched) == outputs(single)


def test_neighbours_without_mlm_and_title_case(tiny, tmp_path):
    embeddings = tiny["model"].encoder.embeddings.word_embeddings.embeddings.numpy()
    space = augment.NeighbourReplacer.from_token_embeddings(tiny["vocab"], embeddings, k=3)
    result = augment.tinybert_candidates(["The Movie was great , films"], tiny["splitter"], neighbours=space)[0]
    assert result.candidates[1] == space.neighbours("movie") and len(result.candidates[1]) == 3
    assert result.candidates[5] == []  # not a whole-word token of the model
    glove = tmp_path / "glove.txt"
    glove.write_text("films 1 0 0\nmovies 0.9 0.1 0\npictures 0.8 0.3 0\nMovie 0 1 0\nfilm 0 0.9 0.1\n"
                     "great 0 0 1\nsuperb 0 0.1 1\n")
    vectors = augment.NeighbourReplacer.from_word_vectors_file(str(glove), k=2)
    mixed = augment.tinybert_candidates(["The Movie was great , films"], tiny["splitter"], mlm=tiny["mlm"],
                                        neighbours=vectors, max_seq_length=16)[0]
    assert mixed.candidates[5] == ["movies", "pictures"]  # multi-piece: word vectors even with an MLM
    assert mixed.candidates[3] == tiny_top5(tiny, "the movie was great , films", 3)  # single piece: the MLM
    cased = augment.tinybert_candidates(["The Movie was great"], augment.WordSplitter(Tokenizer(tiny["vocab_file"], False)),
                                        neighbours=vectors)[0]
    assert cased.words == ["The", "Movie", "was", "great"]
    assert cased.candidates == {1: ["Film", "Pictures"], 3: ["superb", "film"]}  # title-cased like the word


def tiny_top5(tiny, sentence, word):
    _, pieces = tiny["splitter"].split(sentence)
    return tiny["mlm"]([augment.masked_lm_row(pieces, word, tiny["vocab"], 16)])[0]


def test_generation_replaces_only_candidate_words_deterministically(tiny):
    sentence = "The movie , sadly , was not fun at all ."
    candidates = augment.WordCandidates(sentence.lower().split(), {1: ["film", "plot"], 3: ["oddly"], 8: ["joy"]})
    out = augment.tinybert_augment_sentence(sentence, candidates, 20, 0.4, augment.rng_for(0, 5))
    assert out == augment.tinybert_augment_sentence(sentence, candidates, 20, 0.4, augment.rng_for(0, 5))
    assert out != augment.tinybert_augment_sentence(sentence, candidates, 20, 0.4, augment.rng_for(1, 5))
    assert 3 <= len(out) <= 20 and len(set(out)) == len(out)
    for new in out:
        words = new.split()
        for i, (old, word) in enumerate(zip(candidates.words, words)):
            assert word == old or (i in candidates.candidates and word in candidates.candidates[i])
    assert " ".join(candidates.words) not in out
    assert augment.tinybert_augment_sentence(sentence, candidates, 20, 0.0, augment.rng_for(0, 5)) == []
    everything = augment.tinybert_augment_sentence(sentence, candidates, 20, 1.0, augment.rng_for(0, 5))
    assert {w.split()[3] for w in everything} == {"oddly"} and len(everything) == 2  # film / plot
    with pytest.raises(ValueError, match="probability"):
        augment.tinybert_augment_sentence(sentence, candidates, 1, 1.5, augment.rng_for(0, 0))


def run_augmentation(tiny, output, *args):
    return run_script(SCRIPT, f"--input={tiny['root'] / 'train.tsv'}", f"--model={tiny['root'] / 'mlm'}",
                      f"--output={output}", "--augment_factor=6", "--top_k=4", "--max_seq_length=16", "--seed=7",
                      *args)


def test_script_end_to_end_and_shards_concatenate(tiny, tmp_path):
    (tiny["root"] / "train.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES)))
    (tmp_path / "whole.tsv").write_text("previous\n")
    result = run_augmentation(tiny, tmp_path / "whole.tsv", "--batch_size=1", "--chunk_size=3")
    assert "Augmented 8/8 originals" in result.stderr
    lines = (tmp_path / "whole.tsv").read_text().splitlines()
    assert lines[0] == "sentence\tlabel"
    examples, logits = transfer_set.read_labelled_sentences(str(tmp_path / "whole.tsv"), ["0", "1"])
    assert logits is None
    starts = [[e.text_a for e in examples].index(s) for s in SENTENCES]
    assert starts[0] == 0 and starts == sorted(starts) and len(examples) > 2 * len(SENTENCES)
    for n, (start, end) in enumerate(zip(starts, starts[1:] + [len(examples)])):
        assert {e.label for e in examples[start:end]} == {str(n % 2)}  # new rows carry the original's label
        assert len(examples[start + 1:end]) <= 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.tsv"]  # no temporary file left
    # Shard 1 of 2, batched and in one chunk: exactly the whole run's rows from the 5th original on.
    run_augmentation(tiny, tmp_path / "part1.tsv", "--batch_size=64", "--num_shards=2", "--shard_index=1")
    part = (tmp_path / "part1.tsv").read_text().splitlines()
    assert part[0] == "sentence\tlabel" and part[1:] == lines[1 + starts[4]:]


def test_reader_takes_transfer_sets_and_plain_augmented_files(tmp_path):
    with_logits = tmp_path / "t.tsv"
    with_logits.write_text(transfer_set.header(["0", "1"]) +
                           transfer_set.format_rows(["a fine film", "dull"], ["1", "0"], np.array([[0, 1], [2, -1.5]])))
    examples, logits = transfer_set.read_labelled_sentences(str(with_logits), ["0", "1"])
    assert [e.text_a for e in examples] == ["a fine film", "dull"]
    np.testing.assert_allclose(logits, [[0, 1], [2, -1.5]])
    plain = tmp_path / "p.tsv"
    plain.write_text(transfer_set.PLAIN_HEADER + "a fine film\t1\n\nfine film\t1\n")
    examples, logits = transfer_set.read_labelled_sentences(str(plain), ["0", "1"])
    assert logits is None and [(e.text_a, e.label) for e in examples] == [("a fine film", "1"), ("fine film", "1")]
    plain.write_text(transfer_set.PLAIN_HEADER + "a fine film\t1\nfine film\t7\n")
    with pytest.raises(DataFormatError, match=r"p\.tsv:3.*unknown label '7'"):
        transfer_set.read_labelled_sentences(str(plain), ["0", "1"])
    with_logits.write_text(transfer_set.header(["0", "1"]) + "a\t1\tx\t2\n")
    with pytest.raises(DataFormatError, match=r"t\.tsv:2.*not numbers"):
        transfer_set.read_labelled_sentences(str(with_logits), ["0", "1"])


def test_atomic_output_keeps_the_previous_file_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError):
        with files.atomic_output(str(target)) as out:
            out.write("partial\n")
            raise RuntimeError("stop")
    assert target.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]
    with files.atomic_output(str(target)) as out:
        out.write("new\n")
    assert target.read_text() == "new\n"
    assert [transfer_set.shard_bounds(10, 3, k) for k in range(3)] == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "sst2" / "train.tsv").exists(),
                    reason="../shared/data/sst2 not present")
def test_sst2_sentences_split_like_the_tokenizer(tiny):
    path = REPO.parent / "shared" / "data" / "sst2" / "train.tsv"
    sentences = [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines()[1:41]]
    try:
        default = checkpoints.resolve_pretrained()
    except FileNotFoundError:
        pytest.skip("the offline default model is not installed")
    tokenizer = Tokenizer(default.vocab_file)
    splitter = augment.WordSplitter(tokenizer)
    for sentence in sentences:
        assert [p for word in splitter.split(sentence)[1] for p in word] == tokenizer.tokenize(sentence)
