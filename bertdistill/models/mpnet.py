"""MPNet in Keras 3 (all-mpnet-base-v2), beside the Keras BERT and sharing its transformer layer.

MPNet differs from BERT in three places, all in the embeddings and the attention bias:

- a T5-style relative position bias: the distance key - query falls into one of
  `relative_attention_num_buckets` buckets (half per direction, exact below a quarter of the
  buckets, logarithmic up to `relative_attention_max_distance`); one table [buckets, heads],
  shared by every layer, is added to the attention scores before softmax;
- RoBERTa-style position ids: real tokens count from `pad_token_id + 1`, padding keeps
  `pad_token_id`. They are computed here from `attention_mask` (Hugging Face computes them from
  `input_ids != pad`; the two agree for right-padded batches, the project's only layout);
- no token-type embeddings: `token_type_ids` is accepted, so that every encoder of the
  project takes the same three inputs, and ignored.

`MPNetEncoder` has the outputs of `BertEncoder` (`sequence_output`, `pooled_output`, and on
request every layer's hidden states and its attention scores before softmax, bias included),
so the classifier, the distillation losses and the exporters take either encoder.
"""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import ops

from bertdistill import PACKAGE
from bertdistill.models.bert import BertConfig, BertEmbeddings, TransformerEncoder, encoder_checkpoint_variables
from bertdistill.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MPNetConfig(BertConfig):
    """MPNet hyperparameters, as in a Hugging Face `config.json` with `model_type: mpnet`."""

    max_position_embeddings: int = 514
    layer_norm_eps: float = 1e-5
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    pad_token_id: int = 1

    model_type = "mpnet"
    family_name = "MPNet"
    # Keys of an MPNet config.json that are not hyperparameters we model.
    ignored_keys = frozenset({"bos_token_id", "eos_token_id"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.relative_attention_num_buckets < 4 or self.relative_attention_num_buckets % 2:
            raise ConfigError(f"relative_attention_num_buckets must be an even number >= 4, "
                              f"got {self.relative_attention_num_buckets}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} is outside the vocabulary ({self.vocab_size})")
        if self.pad_token_id + 1 >= self.max_position_embeddings:
            raise ConfigError(f"max_position_embeddings {self.max_position_embeddings} leaves no position "
                              f"after pad_token_id {self.pad_token_id}")

    @property
    def max_sequence_length(self) -> int:
        """The longest input the position table covers (positions start after the pad id)."""
        return self.max_position_embeddings - self.pad_token_id - 1


def relative_position_buckets(length, num_buckets: int, max_distance: int):
    """Bucket of every (query, key) pair of a sequence of `length` tokens, int32 [T, T].

    As Hugging Face's `MPNetAttention.relative_position_bucket` (bidirectional T5 buckets): keys
    after the query use the upper half of the buckets; distances below a quarter of the buckets
    are exact, longer ones logarithmic up to `max_distance`, then the last bucket.
    """
    positions = ops.arange(length, dtype="int32")
    n = positions[:, None] - positions[None, :]  # query - key
    half = num_buckets // 2
    bucket = ops.cast(n < 0, "int32") * half
    n = ops.abs(n)
    max_exact = half // 2
    scaled = (ops.log(ops.cast(ops.maximum(n, 1), "float32") / max_exact)
              / math.log(max_distance / max_exact) * (half - max_exact))
    large = ops.minimum(max_exact + ops.cast(scaled, "int32"), half - 1)
    return bucket + ops.where(n < max_exact, n, large)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativePositionBias(keras.layers.Layer):
    """The shared relative position bias: float32 [1, heads, T, T] for a sequence of T tokens."""

    def __init__(self, config: MPNetConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, MPNetConfig) else MPNetConfig.from_dict(config)

    def build(self, input_shape):
        c = self.config
        self.embeddings = self.add_weight(
            shape=(c.relative_attention_num_buckets, c.num_attention_heads), name="embeddings", dtype="float32",
            initializer=keras.initializers.TruncatedNormal(stddev=c.initializer_range))
        self.built = True

    def call(self, input_ids):
        c = self.config
        buckets = relative_position_buckets(ops.shape(input_ids)[1], c.relative_attention_num_buckets,
                                            c.relative_attention_max_distance)
        values = ops.take(ops.cast(self.embeddings, "float32"), buckets, axis=0)  # [T, T, heads]
        return ops.transpose(values, (2, 0, 1))[None]

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MPNetEmbeddings(BertEmbeddings):
    """Word + position embeddings (positions from the mask, RoBERTa-style), LayerNorm, dropout."""

    config_class = MPNetConfig
    token_types = False

    def call(self, input_ids, attention_mask, token_type_ids=None, training=None):
        mask = ops.cast(attention_mask != 0, "int32")
        positions = ops.cumsum(mask, axis=1) * mask + self.config.pad_token_id
        return self.normalize(self.word_embeddings(input_ids) + self.position_embeddings(positions), training=training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MPNetEncoder(TransformerEncoder):
    """The MPNet encoder, with the inputs and outputs of `BertEncoder`: its own embeddings and the
    relative position bias shared by every layer."""

    config_class = MPNetConfig
    embeddings_class = MPNetEmbeddings

    @staticmethod
    def embed(embeddings: MPNetEmbeddings, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
        return embeddings(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])

    @staticmethod
    def position_bias(config: MPNetConfig) -> RelativePositionBias:
        return RelativePositionBias(config, dtype="float32", name="relative_attention_bias")

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        """The encoder's weights under the BERT checkpoint names they correspond to (MPNet's own
        Hugging Face names map to these in `bertdistill.models.checkpoints`), plus the bias table."""
        return {**encoder_checkpoint_variables(self),
                "bert/encoder/relative_attention_bias": self.relative_bias.embeddings}
