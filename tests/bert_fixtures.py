"""Tiny BERT fixtures shared by tests: a config, a vocab file and a padded batch."""
import numpy as np

from bertdistill.models.bert import BertConfig

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad",
              "not", "good", "fun", "dull", "film", "plot", "##s", "a", ".", ","]


def tiny_config(**overrides) -> BertConfig:
    """A 2-layer, hidden-8, 2-head BERT over the 20-token TINY_VOCAB."""
    values = dict(vocab_size=len(TINY_VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=16)
    return BertConfig(**{**values, **overrides})


def write_vocab(path) -> str:
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return str(path)


def tiny_batch() -> dict[str, np.ndarray]:
    """Two sequences of length 6 and 4 padded to 6, the second a sentence pair."""
    return {"input_ids": np.array([[2, 5, 6, 7, 8, 3], [2, 14, 3, 12, 3, 0]], "int32"),
            "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], "int32"),
            "token_type_ids": np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]], "int32")}
