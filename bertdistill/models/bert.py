"""BERT in Keras 3: config, encoder (all hidden states and attention) and classifier.

One model, one file, readable top to bottom. The encoder is a functional model over the
project's stable inputs (`input_ids`, `attention_mask`, `token_type_ids`, int32 [B, T]) with
named outputs (`sequence_output`, `pooled_output`, and on request `hidden_states`,
`attention_scores`, `attention_probs`). Layer names follow the original checkpoints so that
`checkpoint_variables` can map every weight to its Google BERT name (see `bertdistill/models/checkpoints.py`).

Mixed precision: LayerNorm and softmax run in float32 under `mixed_float16` and
`mixed_bfloat16`; the classifier's logits are float32.

Attention scores are returned *before* softmax, scaled by 1/sqrt(head size), with the padding
bias (-10000, as in the original BERT) added; TinyBERT's attention loss masks padded keys
itself. Only request them (`output_attentions=True`) while distilling: they are extra outputs
of every layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, ClassVar

import keras
from keras import ops

from bertdistill import PACKAGE
from bertdistill.errors import ConfigError, MissingFileError, shorten
_MASK_BIAS = -10000.0


def gelu(x):
    """Exact (erf) GELU, written with erf so that tf2onnx can convert it (TF's own uses erfc)."""
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


_ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
}
# Keys of a Hugging Face config.json that are not BERT hyperparameters we model.
_IGNORED_CONFIG_KEYS = {"architectures", "model_type", "transformers_version", "torch_dtype",
                        "dtype", "_name_or_path", "gradient_checkpointing", "use_cache",
                        "pad_token_id", "position_embedding_type", "classifier_dropout",
                        "directionality", "pooler_fc_size", "pooler_num_attention_heads",
                        "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type",
                        "id2label", "label2id", "output_past", "is_decoder",
                        "add_cross_attention", "chunk_size_feed_forward", "tie_word_embeddings",
                        "classifier_pooling"}
POOLINGS = ("cls", "mean")
WORD_EMBEDDINGS = "bert/embeddings/word_embeddings"  # the input-embedding table's Google checkpoint name
_FIELD_TYPES = {"int": int, "float": (int, float), "str": str}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string"}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT hyperparameters, as in `bert_config.json` (Google) or `config.json` (Hugging Face)."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    model_type: ClassVar[str] = "bert"
    family_name: ClassVar[str] = "BERT"
    # Keys of this model type's config.json that are not hyperparameters we model.
    ignored_keys: ClassVar[frozenset[str]] = frozenset()
    # Keys a config must give: a default here would silently build another architecture.
    required_keys: ClassVar[tuple[str, ...]] = ("vocab_size", "hidden_size", "num_hidden_layers",
                                                "num_attention_heads", "intermediate_size")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # a wrongly typed value names its key
            value, kind = getattr(self, field.name), _FIELD_TYPES[field.type]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ConfigError(f"BERT config key {field.name!r} must be {_TYPE_NAMES[field.type]}, "
                                  f"got {shorten(repr(value), 60)}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "BertConfig":
        """Builds a config from a dict; unknown keys (other than known HF extras), a missing
        `vocab_size` and wrongly typed values are a `ConfigError` naming the key."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: a BERT config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known - _IGNORED_CONFIG_KEYS - cls.ignored_keys
        if unknown:
            raise ConfigError(f"{source}: unknown {cls.family_name} config keys {sorted(unknown)}")
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"{source}: only absolute position embeddings are supported")
        missing = [key for key in cls.required_keys if key not in values]
        if missing:
            raise ConfigError(f"{source}: missing key{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(repr(k) for k in missing)}")
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        """Reads `bert_config.json` or a Hugging Face `config.json`."""
        return cls.from_dict(read_config_json(path), source=path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_sequence_length(self) -> int:
        """The longest input (in tokens, specials included) the position table covers."""
        return self.max_position_embeddings


def read_config_json(path: str) -> Any:
    """The JSON of a model config file; a missing file or invalid JSON names the file (and line)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MissingFileError(f"model config not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def _dense(units: int, config: BertConfig, name: str, activation=None) -> keras.layers.Dense:
    init = keras.initializers.TruncatedNormal(stddev=config.initializer_range)
    return keras.layers.Dense(units, activation=activation, kernel_initializer=init, name=name)


def _layer_norm(config: BertConfig, name: str) -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, dtype="float32", name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BertEmbeddings(keras.layers.Layer):
    """Word + position + token type embeddings, LayerNorm, dropout.

    Subclasses of another family set `config_class` and `token_types` (False: no token-type
    table) and override `call`; the tables, LayerNorm and dropout are built here.
    """

    config_class: type[BertConfig] = BertConfig
    token_types: bool = True

    def __init__(self, config: BertConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, self.config_class) else self.config_class.from_dict(config)
        c = self.config
        init = keras.initializers.TruncatedNormal(stddev=c.initializer_range)
        self.word_embeddings = keras.layers.Embedding(c.vocab_size, c.hidden_size, embeddings_initializer=init,
                                                      name="word_embeddings")
        self.position_embeddings = keras.layers.Embedding(c.max_position_embeddings, c.hidden_size,
                                                          embeddings_initializer=init, name="position_embeddings")
        self.token_type_embeddings = keras.layers.Embedding(
            c.type_vocab_size, c.hidden_size, embeddings_initializer=init,
            name="token_type_embeddings") if self.token_types else None
        self.layer_norm = _layer_norm(c, "LayerNorm")
        self.dropout = keras.layers.Dropout(c.hidden_dropout_prob)

    def build(self, input_shape):
        for layer in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            if layer is not None:
                layer.build((None, None))
        self.layer_norm.build((None, None, self.config.hidden_size))
        self.built = True

    def normalize(self, x, training=None):
        """LayerNorm and dropout of the summed embeddings, in the compute dtype."""
        return self.dropout(ops.cast(self.layer_norm(x), self.compute_dtype), training=training)

    def call(self, input_ids, token_type_ids, training=None):
        positions = ops.arange(ops.shape(input_ids)[1])
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(positions)[None])
        return self.normalize(x, training=training)

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerLayer(keras.layers.Layer):
    """One post-LayerNorm BERT layer: self-attention, then the feed-forward block.

    `call` returns `(output, scores, probs)`: scores are the masked logits before softmax and
    probs the float32 attention probabilities, both [B, heads, T, T].
    """

    def __init__(self, config: BertConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, BertConfig) else BertConfig.from_dict(config)
        c = self.config
        self.query = _dense(c.hidden_size, c, "query")
        self.key = _dense(c.hidden_size, c, "key")
        self.value = _dense(c.hidden_size, c, "value")
        self.attention_output = _dense(c.hidden_size, c, "attention_output")
        self.attention_layer_norm = _layer_norm(c, "attention_LayerNorm")
        self.intermediate = _dense(c.intermediate_size, c, "intermediate", activation=_ACTIVATIONS[c.hidden_act])
        self.output_dense = _dense(c.hidden_size, c, "output")
        self.output_layer_norm = _layer_norm(c, "output_LayerNorm")
        self.attention_dropout = keras.layers.Dropout(c.attention_probs_dropout_prob)
        self.hidden_dropout = keras.layers.Dropout(c.hidden_dropout_prob)

    def build(self, input_shape):
        c = self.config
        for layer in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            layer.build((None, None, c.hidden_size))
        self.output_dense.build((None, None, c.intermediate_size))
        self.attention_layer_norm.build((None, None, c.hidden_size))
        self.output_layer_norm.build((None, None, c.hidden_size))
        self.built = True

    def _split_heads(self, x):
        c = self.config
        x = ops.reshape(x, (ops.shape(x)[0], -1, c.num_attention_heads, c.head_size))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, hidden, attention_mask, position_bias=None, training=None):
        """`position_bias` (float32, broadcastable to [B, heads, T, T]) is added to the scores
        before softmax (MPNet's relative position bias); BERT passes none."""
        c = self.config
        attention_bias = (1.0 - ops.cast(attention_mask, "float32")[:, None, None, :]) * _MASK_BIAS
        if position_bias is not None:  # float32, whatever the policy cast the argument to
            attention_bias = attention_bias + ops.cast(position_bias, "float32")
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(c.head_size))
        scores = ops.cast(scores, "float32") + attention_bias
        probs = ops.softmax(scores, axis=-1)
        context = ops.matmul(self.attention_dropout(ops.cast(probs, self.compute_dtype), training=training), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (ops.shape(hidden)[0], -1, c.hidden_size))
        attended = self.hidden_dropout(self.attention_output(context), training=training)
        attended = ops.cast(self.attention_layer_norm(hidden + attended), self.compute_dtype)
        ffn = self.hidden_dropout(self.output_dense(self.intermediate(attended)), training=training)
        output = ops.cast(self.output_layer_norm(attended + ffn), self.compute_dtype)
        return output, scores, probs

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


def encoder_outputs(x, attention_mask, layers: list[TransformerLayer], pooler: keras.layers.Dense,
                    output_hidden_states: bool, output_attentions: bool, position_bias=None) -> dict:
    """An encoder's outputs from its embedding output `x`: `sequence_output`, `pooled_output`
    (the pooler over the first token) and, on request, every hidden state and attention."""
    hidden_states, scores, probs = [x], [], []
    for layer in layers:
        x, layer_scores, layer_probs = layer(x, attention_mask, position_bias)
        hidden_states.append(x)
        scores.append(layer_scores)
        probs.append(layer_probs)
    outputs = {"sequence_output": x, "pooled_output": pooler(x[:, 0])}
    if output_hidden_states:
        outputs["hidden_states"] = hidden_states
    if output_attentions:
        outputs["attention_scores"] = scores
        outputs["attention_probs"] = probs
    return outputs


def encoder_checkpoint_variables(encoder: keras.Model) -> dict[str, keras.Variable]:
    """The Google checkpoint names every encoder shares: word and position embeddings, their
    LayerNorm, the transformer layers and the pooler."""
    emb = encoder.embeddings
    return {
        WORD_EMBEDDINGS: emb.word_embeddings.embeddings,
        "bert/embeddings/position_embeddings": emb.position_embeddings.embeddings,
        "bert/embeddings/LayerNorm/gamma": emb.layer_norm.gamma,
        "bert/embeddings/LayerNorm/beta": emb.layer_norm.beta,
        **layer_checkpoint_variables(encoder.transformer_layers),
        "bert/pooler/dense/kernel": encoder.pooler.kernel,
        "bert/pooler/dense/bias": encoder.pooler.bias,
    }


def encoder_inputs() -> dict[str, keras.KerasTensor]:
    return {name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("input_ids", "attention_mask", "token_type_ids")}


class TransformerEncoder(keras.Model):
    """What the project's encoders share, as a functional model: the three inputs
    (`encoder_inputs`), the family's embeddings (`embeddings_class`, called by `embed`), an
    optional position bias shared by every layer (`position_bias`), the transformer layers, the
    pooler, the outputs (`encoder_outputs`), the config (`config_class`) and serialization.

    Outputs a dict: `sequence_output` [B, T, H], `pooled_output` [B, H] (tanh dense over the
    first token); with `output_hidden_states`, `hidden_states` (embedding output then each
    layer's output, L + 1 tensors); with `output_attentions`, `attention_scores` and
    `attention_probs` (L tensors of [B, heads, T, T], float32).
    """

    config_class: type[BertConfig] = BertConfig
    embeddings_class: type[BertEmbeddings] = BertEmbeddings

    def __init__(self, config: BertConfig | dict, output_hidden_states: bool = False,
                 output_attentions: bool = False, **kwargs):
        config = config if isinstance(config, self.config_class) else self.config_class.from_dict(config)
        inputs = encoder_inputs()
        embeddings = self.embeddings_class(config, name="embeddings")
        relative_bias = self.position_bias(config)
        layers = [TransformerLayer(config, name=f"layer_{i}") for i in range(config.num_hidden_layers)]
        pooler = _dense(config.hidden_size, config, "pooler", activation="tanh")

        outputs = encoder_outputs(self.embed(embeddings, inputs), inputs["attention_mask"], layers, pooler,
                                  output_hidden_states, output_attentions,
                                  position_bias=None if relative_bias is None else relative_bias(inputs["input_ids"]))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.config = config
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        self.embeddings = embeddings
        if relative_bias is not None:
            self.relative_bias = relative_bias
        self.transformer_layers = layers
        self.pooler = pooler

    @staticmethod
    def embed(embeddings: BertEmbeddings, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
        """The embeddings' output for the encoder's inputs."""
        return embeddings(inputs["input_ids"], inputs["token_type_ids"])

    @staticmethod
    def position_bias(config: BertConfig) -> keras.layers.Layer | None:
        """The layer of the bias added to every layer's attention scores (None: no bias)."""
        return None

    def get_config(self):
        return {"config": self.config.to_dict(), "output_hidden_states": self.output_hidden_states,
                "output_attentions": self.output_attentions, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BertEncoder(TransformerEncoder):
    """The BERT encoder (word, position and token-type embeddings; no position bias)."""

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        """Google checkpoint names of the encoder's weights."""
        return {**encoder_checkpoint_variables(self),
                "bert/embeddings/token_type_embeddings": self.embeddings.token_type_embeddings.embeddings}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BertClassifier(keras.Model):
    """BERT encoder + dropout + dense classifier; float32 logits [B, num_labels].

    `pooling="cls"` classifies the pooler output ([CLS], as BERT does); `"mean"` the mean of
    the real tokens' final hidden states, which suits encoders trained as sentence embedders
    (all-MiniLM-L6-v2). The encoder is available as `.encoder` (for distillation, build it
    with `output_hidden_states` / `output_attentions`).
    """

    def __init__(self, encoder: BertEncoder | dict, num_labels: int, dropout: float | None = None,
                 pooling: str = "cls", **kwargs):
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        dropout = encoder.config.hidden_dropout_prob if dropout is None else dropout
        inputs = encoder_inputs()
        outputs = encoder(inputs)
        if pooling == "cls":
            pooled = outputs["pooled_output"]
        else:
            mask = ops.cast(inputs["attention_mask"], "float32")[:, :, None]
            summed = ops.sum(ops.cast(outputs["sequence_output"], "float32") * mask, axis=1)
            pooled = summed / ops.maximum(ops.sum(mask, axis=1), 1.0)
        head = keras.layers.Dense(
            num_labels, dtype="float32", name="classifier",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=encoder.config.initializer_range))
        logits = head(keras.layers.Dropout(dropout, name="classifier_dropout")(pooled))
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.encoder = encoder
        self.head = head
        self.num_labels = num_labels
        self.dropout_rate = dropout
        self.pooling = pooling
        self._encoder_outputs = outputs  # symbolic, for `with_encoder_outputs`

    def with_encoder_outputs(self) -> keras.Model:
        """The same weights as one model returning `(logits, encoder outputs)` from one pass (to fit
        the logits and the intermediate layers of a distillation student at once)."""
        return keras.Model(self.input, [self.output, self._encoder_outputs])

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder), "num_labels": self.num_labels,
                "dropout": self.dropout_rate, "pooling": self.pooling, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def layer_checkpoint_variables(layers: list[TransformerLayer]) -> dict[str, keras.Variable]:
    """Google checkpoint names of the transformer layers' weights (`bert/encoder/layer_N/...`)."""
    names = {}
    for i, layer in enumerate(layers):
        prefix = f"bert/encoder/layer_{i}/"
        dense = {"attention/self/query": layer.query, "attention/self/key": layer.key,
                 "attention/self/value": layer.value, "attention/output/dense": layer.attention_output,
                 "intermediate/dense": layer.intermediate, "output/dense": layer.output_dense}
        for path, d in dense.items():
            names[prefix + path + "/kernel"] = d.kernel
            names[prefix + path + "/bias"] = d.bias
        for path, norm in {"attention/output/LayerNorm": layer.attention_layer_norm,
                           "output/LayerNorm": layer.output_layer_norm}.items():
            names[prefix + path + "/gamma"] = norm.gamma
            names[prefix + path + "/beta"] = norm.beta
    return names


def checkpoint_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Maps Google BERT checkpoint names (`bert/encoder/layer_0/attention/self/query/kernel`, ...)
    to this model's variables (an encoder's own names come from its `checkpoint_variables()`).
    A classifier adds `output_weights` / `output_bias` (stored as in run_classifier.py:
    `output_weights` is [num_labels, hidden], the transpose of our kernel); a `BertMaskedLM`
    adds its head's `cls/predictions/*` (`masked_lm_checkpoint_variables`).
    """
    if isinstance(model, BertMaskedLM):
        return masked_lm_checkpoint_variables(model)
    encoder = model.encoder if isinstance(model, BertClassifier) else model
    names = encoder.checkpoint_variables()
    if isinstance(model, BertClassifier):
        names["output_weights"] = model.head.kernel
        names["output_bias"] = model.head.bias
    return names


# Checkpoint names whose arrays are stored transposed relative to our variables.
TRANSPOSED_IN_CHECKPOINT = frozenset({"output_weights"})


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedLMHead(keras.layers.Layer):
    """BERT's masked-LM prediction head over gathered hidden states [B, P, H]: dense H->H with
    the config's activation, LayerNorm, then float32 logits = x @ word_embeddings^T + output_bias
    [B, P, vocab]. The output projection is the encoder's word-embedding table itself (tied, as
    in BERT), so the head owns only the transform and the bias.
    """

    def __init__(self, config: BertConfig | dict, word_embeddings: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, BertConfig) else BertConfig.from_dict(config)
        c = self.config
        self.transform = _dense(c.hidden_size, c, "transform_dense", activation=_ACTIVATIONS[c.hidden_act])
        self.transform_layer_norm = _layer_norm(c, "transform_LayerNorm")
        # Not tracked as a sub-layer: the table belongs to the encoder (no duplicate weight).
        object.__setattr__(self, "_word_embeddings", word_embeddings)

    def build(self, input_shape):
        c = self.config
        self.transform.build((None, None, c.hidden_size))
        self.transform_layer_norm.build((None, None, c.hidden_size))
        self.output_bias = self.add_weight(shape=(c.vocab_size,), initializer="zeros", name="output_bias",
                                           dtype="float32")
        self.built = True

    def call(self, hidden):
        x = ops.cast(self.transform_layer_norm(self.transform(hidden)), "float32")
        table = ops.cast(self._word_embeddings.embeddings, "float32")
        return ops.matmul(x, ops.transpose(table)) + self.output_bias


@keras.saving.register_keras_serializable(package=PACKAGE)
class BertMaskedLM(keras.Model):
    """BERT encoder + masked-LM head: float32 logits [B, P, vocab] at `masked_positions` [B, P].

    Inputs: the encoder's three plus `masked_positions` (int32 indices into each row). Only the
    gathered positions go through the head, so the vocabulary projection costs B * P rows, not
    B * T. The head's weights map to Google's `cls/predictions/*` (see `checkpoint_variables`).
    """

    def __init__(self, encoder: BertEncoder | dict, **kwargs):
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        inputs = {**encoder_inputs(), "masked_positions": keras.Input(shape=(None,), dtype="int32",
                                                                       name="masked_positions")}
        sequence = encoder({k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")})["sequence_output"]
        gathered = ops.take_along_axis(sequence, ops.expand_dims(inputs["masked_positions"], -1), axis=1)
        head = MaskedLMHead(encoder.config, encoder.embeddings.word_embeddings, name="cls_predictions")
        logits = head(gathered)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.encoder = encoder
        self.head = head

    @property
    def config(self) -> BertConfig:
        return self.encoder.config

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder), "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def masked_lm_checkpoint_variables(model: BertMaskedLM) -> dict[str, keras.Variable]:
    """`checkpoint_variables` of the encoder plus the head's Google names (`cls/predictions/...`).
    The output projection is tied to `bert/embeddings/word_embeddings` (Hugging Face's
    `cls.predictions.decoder.weight` is the same table and is not stored separately)."""
    head = model.head
    return {**checkpoint_variables(model.encoder),
            "cls/predictions/transform/dense/kernel": head.transform.kernel,
            "cls/predictions/transform/dense/bias": head.transform.bias,
            "cls/predictions/transform/LayerNorm/gamma": head.transform_layer_norm.gamma,
            "cls/predictions/transform/LayerNorm/beta": head.transform_layer_norm.beta,
            "cls/predictions/output_bias": head.output_bias}
