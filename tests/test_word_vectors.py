"""Word vectors from a model's input embeddings (each word: the mean of its word pieces' rows),
and the dimension of a vectors file or a model read without loading it."""
import numpy as np
import pytest

from bertdistill.errors import DataError
from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier, BertEncoder
from bertdistill.models.word_vectors import model_word_vectors, vector_size
from tests.bert_fixtures import TINY_VOCAB, tiny_config, write_vocab


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny BERT as a Hugging Face folder, and its input-embedding table."""
    root = tmp_path_factory.mktemp("word_vectors")
    model = BertClassifier(BertEncoder(tiny_config()), num_labels=2)
    checkpoints.save_hf_folder(model, str(root / "hf"), write_vocab(root / "vocab.txt"), ["0", "1"], True)
    return str(root / "hf"), model.encoder.embeddings.word_embeddings.embeddings.numpy()


def test_a_word_is_the_mean_of_its_pieces(tiny_model):
    folder, table = tiny_model
    ids = {token: index for index, token in enumerate(TINY_VOCAB)}
    words, vectors = model_word_vectors(folder, ["movie", "Films", "plots", "zebra", "the"])
    assert words == ["movie", "Films", "plots", "the"]  # "zebra" has no pieces in the vocabulary
    np.testing.assert_allclose(vectors[0], table[ids["movie"]], atol=1e-7)
    np.testing.assert_allclose(vectors[1], (table[ids["film"]] + table[ids["##s"]]) / 2, atol=1e-7)  # uncased
    np.testing.assert_allclose(vectors[2], (table[ids["plot"]] + table[ids["##s"]]) / 2, atol=1e-7)
    assert vectors.dtype == np.float32 and vectors.shape == (4, tiny_config().hidden_size)


def test_vector_size_of_a_model_and_of_a_file(tiny_model, tmp_path):
    assert vector_size(tiny_model[0]) == tiny_config().hidden_size
    glove = tmp_path / "glove.txt"
    glove.write_text("good 0.1 0.2 0.3\nbad 0.3 0.2 0.1\n")
    assert vector_size(str(glove)) == 3
    glove.write_text("good\n")
    with pytest.raises(DataError, match="glove.txt:1"):
        vector_size(str(glove))
