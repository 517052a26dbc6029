"""Pretrained BERT weights from Hugging Face folders, Google BERT TF checkpoints and the
offline default package, mapped onto `bertdistill.models.bert` models by Google checkpoint names.

Every source resolves to a `Pretrained`: a `BertConfig`, a `vocab.txt` and the weights as
numpy arrays keyed by Google names (`bert/encoder/layer_0/attention/self/query/kernel`).
`restore_weights` copies them into a model, refusing shape mismatches (naming both shapes)
and reporting missing and unexpected weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Sequence

import keras
import numpy as np
from absl import logging

from bertdistill.models import model_packages
from bertdistill.models.bert import (TRANSPOSED_IN_CHECKPOINT, WORD_EMBEDDINGS, BertClassifier, BertConfig, BertMaskedLM,
                                     checkpoint_variables)
from bertdistill.models.encoders import build_encoder, config_from_json_file
from bertdistill.errors import ConfigError, MissingFileError, field, read_json, shorten
from bertdistill.export_format import CONFIG, HF_WEIGHTS, LABELS, TOKENIZER_CONFIG, VOCAB, read_text_inputs
from bertdistill.files import safetensors_file
from bertdistill.data.tokenization import Tokenizer

# Weights a pretraining checkpoint carries that a classifier does not use: not worth a warning.
_IGNORED_WEIGHTS = re.compile(r"(^cls/|^bert/lm_head/|position_ids$|/adam_[mv]$|^global_step$)")


@dataclasses.dataclass
class Pretrained:
    """A resolved pretrained model: config, vocabulary and weights keyed by Google names."""

    config: BertConfig
    vocab_file: str
    weights: dict[str, np.ndarray]
    source: str
    do_lower_case: bool | None = None  # None when the source does not say
    classifier_pooling: str | None = None  # set by our own export folders

    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer: its vocabulary and casing (lower case where the source does not say)."""
        return Tokenizer(self.vocab_file, True if self.do_lower_case is None else self.do_lower_case)

    def input_embeddings(self) -> np.ndarray | None:
        """The input-embedding table [vocab_size, hidden_size], None when the source has no weights."""
        return self.weights.get(WORD_EMBEDDINGS)


@dataclasses.dataclass
class LoadReport:
    """What `restore_weights` did: weights the model has but the source lacks, and the reverse."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]


# MPNet's Hugging Face names -> the BERT names of the same weights (`MPNetModel` and
# `MPNetForSequenceClassification`, whose head is BERT's pooler + classifier under other names).
_MPNET_TO_BERT_HF = (
    (".attention.attn.q.", ".attention.self.query."), (".attention.attn.k.", ".attention.self.key."),
    (".attention.attn.v.", ".attention.self.value."), (".attention.attn.o.", ".attention.output.dense."),
    (".attention.LayerNorm.", ".attention.output.LayerNorm."),
)
_MPNET_HEAD_TO_BERT_HF = {"classifier.dense.weight": "pooler.dense.weight", "classifier.dense.bias": "pooler.dense.bias",
                          "classifier.out_proj.weight": "classifier.weight", "classifier.out_proj.bias": "classifier.bias",
                          "encoder.relative_attention_bias.weight": "encoder.relative_attention_bias"}


def mpnet_to_bert_hf_name(name: str) -> str:
    """An MPNet Hugging Face weight name as the BERT Hugging Face name of the same weight
    (`mpnet.encoder.layer.0.attention.attn.q.weight` -> `encoder.layer.0.attention.self.query.weight`)."""
    name = name.removeprefix("mpnet.")
    for mpnet, bert in _MPNET_TO_BERT_HF:
        name = name.replace(mpnet, bert)
    return _MPNET_HEAD_TO_BERT_HF.get(name, name)


def bert_to_mpnet_hf_name(name: str, pooled_head: bool) -> str:
    """Inverse of `mpnet_to_bert_hf_name` for a classifier with `pooled_head` (BERT's pooler +
    classifier, which is `MPNetForSequenceClassification`'s head) or an encoder."""
    if name == "encoder.relative_attention_bias":
        return "mpnet.encoder.relative_attention_bias.weight"
    if pooled_head:
        head = {bert: mpnet for mpnet, bert in _MPNET_HEAD_TO_BERT_HF.items() if mpnet.startswith("classifier.")}
        if name in head:
            return head[name]
    for mpnet, bert in _MPNET_TO_BERT_HF:
        name = name.replace(bert, mpnet)
    return name if name.startswith("classifier.") else "mpnet." + name


def hf_to_google_name(name: str) -> tuple[str, bool]:
    """Maps a Hugging Face BERT weight name to its Google name; True when the array is transposed.

    `bert.encoder.layer.0.attention.self.query.weight` -> (`bert/encoder/layer_0/attention/self/query/kernel`, True);
    the pretraining heads keep their own root: `cls.predictions.transform.dense.weight` ->
    (`cls/predictions/transform/dense/kernel`, True), `cls.predictions.bias` -> `cls/predictions/output_bias`
    (as does `cls.predictions.decoder.bias`, the same tied vector).
    """
    name = name.removeprefix("bert.")
    if (name.startswith("mpnet.") or ".attention.attn." in name or ".attention.LayerNorm." in name
            or "relative_attention_bias" in name
            or name.startswith(("classifier.dense.", "classifier.out_proj."))):
        name = mpnet_to_bert_hf_name(name)
    if name == "encoder.relative_attention_bias":
        return "bert/encoder/relative_attention_bias", False
    if name in ("cls.predictions.bias", "cls.predictions.decoder.bias"):
        return "cls/predictions/output_bias", False
    if name.startswith("classifier."):
        return {"classifier.weight": "output_weights", "classifier.bias": "output_bias"}.get(name, name), False
    path = re.sub(r"^encoder\.layer\.(\d+)\.", r"encoder/layer_\1/", name).replace(".", "/")
    transposed = False
    if path.endswith("LayerNorm/weight") or path.endswith("LayerNorm/gamma"):
        path = path.rsplit("/", 1)[0] + "/gamma"
    elif path.endswith("LayerNorm/bias") or path.endswith("LayerNorm/beta"):
        path = path.rsplit("/", 1)[0] + "/beta"
    elif path.endswith("_embeddings/weight"):
        path = path.removesuffix("/weight")
    elif path.endswith("/weight"):
        path, transposed = path.removesuffix("/weight") + "/kernel", True
    return (path if path.startswith("cls/") else "bert/" + path), transposed


def google_to_hf_name(name: str) -> tuple[str, bool]:
    """Inverse of `hf_to_google_name`: `bert/pooler/dense/kernel` -> (`bert.pooler.dense.weight`, True)."""
    if name == "bert/encoder/relative_attention_bias":
        return "encoder.relative_attention_bias", False
    if name in ("output_weights", "output_bias"):
        return {"output_weights": "classifier.weight", "output_bias": "classifier.bias"}[name], False
    if name == "cls/predictions/output_bias":
        return "cls.predictions.bias", False
    path = re.sub(r"/layer_(\d+)/", r"/layer/\1/", name).replace("/", ".")
    for suffix, hf_suffix, transposed in ((".gamma", ".weight", False), (".beta", ".bias", False),
                                          (".kernel", ".weight", True), ("_embeddings", "_embeddings.weight", False)):
        if path.endswith(suffix):
            return path.removesuffix(suffix) + hf_suffix, transposed
    return path, False


# The Hugging Face classes of the project's models, by model type: a bare encoder, and the
# classifier whose head is the pooler + classifier of `pooling="cls"` (dense + tanh on the first
# token, then a linear layer).
HF_ENCODERS = {"bert": "BertModel", "mpnet": "MPNetModel"}
HF_CLS_CLASSIFIERS = {"bert": "BertForSequenceClassification", "mpnet": "MPNetForSequenceClassification"}
# The classifier of a mean-pooled model, beside the encoder's model.safetensors: `classifier.weight`
# [num_labels, hidden] and `classifier.bias` (no transformers class pools by mean).
HF_HEAD_FILE = "classifier.safetensors"
# transformers' MPNet computes its relative position buckets with these values whatever
# config.json says.
TRANSFORMERS_MPNET_BUCKETS = (32, 128)


def save_hf_folder(model: BertClassifier, folder: str, vocab_file: str, labels: list[str],
                   do_lower_case: bool, max_seq_length: int | None = None) -> None:
    """Writes `model` as a Hugging Face folder that transformers runs as trained, loadable by
    `load_hf_folder` (config.json, model.safetensors, vocab.txt, tokenizer_config.json):

    - `pooling="cls"`: `BertForSequenceClassification` / `MPNetForSequenceClassification`;
    - `pooling="mean"`: the encoder as `BertModel` / `MPNetModel`, and the classifier in
      `HF_HEAD_FILE`, applied to the mask-weighted mean of `last_hidden_state` (README).
    `config.json` also records `classifier_pooling` and the labels. tokenizer_config.json's
    `model_max_length` is `max_seq_length` (the length the model was trained with) when given,
    else the model's position limit."""
    model_type = model.encoder.config.model_type
    architecture = HF_CLS_CLASSIFIERS[model_type] if model.pooling == "cls" else HF_ENCODERS[model_type]
    _write_hf_folder(model, folder, vocab_file, do_lower_case, {
        "classifier_pooling": model.pooling, "architectures": [architecture],
        "id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}},
        max_seq_length)


def save_hf_masked_lm(model: BertMaskedLM, folder: str, vocab_file: str, do_lower_case: bool) -> None:
    """Writes `model` as a Hugging Face `BertForMaskedLM` folder (the head as `cls.predictions.*`;
    the decoder weight is the tied word-embedding table and is not stored), loadable by
    `load_hf_folder` / `load_masked_lm`."""
    _write_hf_folder(model, folder, vocab_file, do_lower_case, {"architectures": ["BertForMaskedLM"]})


def save_hf_encoder(encoder: keras.Model, folder: str, vocab_file: str, do_lower_case: bool) -> None:
    """Writes a bare encoder (no head) as a Hugging Face `BertModel` / `MPNetModel` folder,
    loadable by `load_hf_folder` (e.g. a student from general distillation)."""
    _write_hf_folder(encoder, folder, vocab_file, do_lower_case,
                     {"architectures": [HF_ENCODERS[encoder.config.model_type]]})


def _tokenizer_config(model_type: str, do_lower_case: bool, max_length: int) -> dict:
    if model_type == "mpnet":
        return {"do_lower_case": do_lower_case, "tokenizer_class": "MPNetTokenizer", "model_max_length": max_length,
                "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                "unk_token": "[UNK]", "pad_token": "<pad>", "mask_token": "<mask>"}
    return {"do_lower_case": do_lower_case, "tokenizer_class": "BertTokenizer", "model_max_length": max_length}


def _write_hf_folder(model: keras.Model, folder: str, vocab_file: str, do_lower_case: bool,
                     extra_config: dict, max_seq_length: int | None = None) -> None:
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    encoder = model.encoder if isinstance(model, (BertClassifier, BertMaskedLM)) else model
    config = encoder.config
    model_type = config.model_type
    if model_type == "mpnet" and (config.relative_attention_num_buckets,
                                  config.relative_attention_max_distance) != TRANSFORMERS_MPNET_BUCKETS:
        logging.warning("%s: transformers' MPNet uses %d relative position buckets up to distance %d whatever "
                        "config.json says; this model's %d up to %d give other outputs there (this toolkit reads "
                        "the folder correctly)", folder, *TRANSFORMERS_MPNET_BUCKETS,
                        config.relative_attention_num_buckets, config.relative_attention_max_distance)
    with open(os.path.join(folder, CONFIG), "w", encoding="utf-8") as f:
        json.dump({**config.to_dict(), "model_type": model_type, **extra_config}, f, indent=2)
    max_length = config.max_sequence_length if max_seq_length is None else min(max_seq_length,
                                                                               config.max_sequence_length)
    with open(os.path.join(folder, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(_tokenizer_config(model_type, do_lower_case, max_length), f, indent=2)
    shutil.copyfile(vocab_file, os.path.join(folder, VOCAB))
    pooled_head = isinstance(model, BertClassifier) and model.pooling == "cls"
    tensors = {}
    for name, variable in checkpoint_variables(model).items():
        hf_name, transposed = google_to_hf_name(name)
        if model_type == "mpnet":
            hf_name = bert_to_mpnet_hf_name(hf_name.removeprefix("bert."), pooled_head)
        array = variable.numpy().astype(np.float32)
        tensors[hf_name] = np.ascontiguousarray(array.T if transposed or name in TRANSPOSED_IN_CHECKPOINT else array)
    head_file = os.path.join(folder, HF_HEAD_FILE)
    if isinstance(model, BertClassifier) and not pooled_head:
        save_file({name: tensors.pop(name) for name in ("classifier.weight", "classifier.bias")}, head_file)
    elif os.path.exists(head_file):  # a previous model's, which the loader would read
        os.remove(head_file)
    save_file(tensors, os.path.join(folder, HF_WEIGHTS))


def _check_vocab(vocab_file: str, config: BertConfig, config_source: str) -> None:
    if not os.path.isfile(vocab_file):
        raise MissingFileError(f"vocab file not found: {vocab_file}")
    with open(vocab_file, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    if size != config.vocab_size:
        raise ConfigError(f"vocab {vocab_file} has {size} tokens but {config_source} says "
                         f"vocab_size={config.vocab_size}: the vocabulary does not belong to this model")


def _require(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise MissingFileError(f"{what} not found: {path}")
    return path


HF_FOLDER_CONTENTS = "config.json, model.safetensors, vocab.txt"


def _check_hf_folder(folder: str) -> None:
    """A folder that is not a Hugging Face BERT folder: say what was expected inside (and, for a
    run folder of this toolkit, to pass its export/)."""
    if os.path.exists(os.path.join(folder, CONFIG)):
        return
    inner = os.path.join(folder, "export")
    if os.path.exists(os.path.join(inner, CONFIG)):
        raise MissingFileError(f"{shorten(folder)} is a run folder, not a model folder: pass {shorten(inner)}")
    raise MissingFileError(f"{shorten(folder)} is not a model folder: expected {HF_FOLDER_CONTENTS} inside "
                           f"(a Hugging Face BERT folder or an export folder of this toolkit); "
                           f"{os.path.join(folder, 'config.json')} not found")


def load_hf_folder(folder: str) -> Pretrained:
    """Loads a Hugging Face BERT or MPNet folder (`config.json`, `model.safetensors`, `vocab.txt`,
    and `HF_HEAD_FILE` when there is one) without PyTorch."""
    _check_hf_folder(folder)
    config_file = _require(os.path.join(folder, CONFIG), "Hugging Face config")
    weights_file = os.path.join(folder, HF_WEIGHTS)
    if not os.path.exists(weights_file):
        hint = " (only pytorch_model.bin is there: convert it to safetensors)" if os.path.exists(
            os.path.join(folder, "pytorch_model.bin")) else ""
        raise MissingFileError(f"weights not found: {weights_file}{hint}; expected {HF_FOLDER_CONTENTS} in "
                               f"{folder}")
    config = config_from_json_file(config_file)
    vocab_file = os.path.join(folder, VOCAB)
    _check_vocab(vocab_file, config, config_file)
    head_file = os.path.join(folder, HF_HEAD_FILE)  # a mean-pooled classifier's head, when there is one
    weights = {}
    for path in [weights_file, *([head_file] if os.path.exists(head_file) else [])]:
        with safetensors_file(path) as f:
            for name in f.keys():
                google_name, transposed = hf_to_google_name(name)
                array = f.get_tensor(name)
                weights[google_name] = array.T if transposed else array
    with open(config_file, encoding="utf-8") as f:
        pooling = json.load(f).get("classifier_pooling")
    return Pretrained(config, vocab_file, weights, source=folder, do_lower_case=_hf_do_lower_case(folder),
                      classifier_pooling=pooling)


def _hf_do_lower_case(folder: str) -> bool | None:
    path = os.path.join(folder, TOKENIZER_CONFIG)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("do_lower_case")


def load_google_checkpoint(init_checkpoint: str, bert_config_file: str, vocab_file: str) -> Pretrained:
    """Loads a Google BERT TF checkpoint (`bert_model.ckpt` prefix, `bert_config.json`, `vocab.txt`)."""
    import tensorflow as tf

    config = BertConfig.from_json_file(_require(bert_config_file, "BERT config"))
    _check_vocab(vocab_file, config, bert_config_file)
    if not tf.io.gfile.exists(init_checkpoint + ".index"):
        raise MissingFileError(f"TF checkpoint not found: {init_checkpoint}.index (expected a checkpoint prefix: "
                               f"<prefix>.index and <prefix>.data-*)")
    reader = tf.train.load_checkpoint(init_checkpoint)
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    return Pretrained(config, vocab_file, weights, source=init_checkpoint)


def default_pretrained_dir() -> str:
    """The `model/` folder of the installed offline default (all-MiniLM-L6-v2)."""
    return model_packages.minilm_folder()


def resolve_pretrained(init_checkpoint: str | None = None, bert_config_file: str | None = None,
                       vocab_file: str | None = None) -> Pretrained:
    """Resolves run_classifier's flags to a pretrained model.

    - a Hugging Face folder (has `config.json`): loaded from safetensors;
    - a TF checkpoint prefix with `bert_config_file` and `vocab_file`: the Google format;
    - `bert_config_file` and `vocab_file` alone: a random initialisation (no weights);
    - a short name (`minilm`, `mpnet`): that installed package's folder (`bertdistill.models.model_packages`);
    - nothing: the offline default package.
    An explicit `vocab_file` / `bert_config_file` overrides the folder's own (and is checked).
    """
    if init_checkpoint is None:
        if bert_config_file and vocab_file:  # Google's run_classifier: a random initialisation of that shape
            config = BertConfig.from_json_file(_require(bert_config_file, "BERT config"))
            _check_vocab(vocab_file, config, bert_config_file)
            return Pretrained(config, vocab_file, {}, source=f"random initialisation of {bert_config_file}")
        if bert_config_file or vocab_file:
            raise ConfigError(f"{field('bert_config_file')} and {field('vocab_file')} go together (without "
                              f"{field('init_checkpoint')}: a randomly initialised model of that shape)")
        init_checkpoint = default_pretrained_dir()
    init_checkpoint = model_packages.resolve_short_name(init_checkpoint) or init_checkpoint
    if os.path.isdir(init_checkpoint):
        pretrained = load_hf_folder(init_checkpoint)
        if bert_config_file:
            override = config_from_json_file(_require(bert_config_file, "BERT config"))
            if override != pretrained.config:
                raise ConfigError(f"{bert_config_file} does not match {init_checkpoint}/config.json")
        if vocab_file:
            _check_vocab(vocab_file, pretrained.config, os.path.join(init_checkpoint, CONFIG))
            pretrained.vocab_file = vocab_file
        return pretrained
    if not os.path.exists(init_checkpoint + ".index") and not os.path.exists(init_checkpoint):
        raise MissingFileError(f"{shorten(init_checkpoint)} is neither a model folder ({HF_FOLDER_CONTENTS}) nor a "
                               f"TF checkpoint prefix ({shorten(init_checkpoint)}.index not found)")
    if not bert_config_file or not vocab_file:
        raise ConfigError(f"{field('init_checkpoint')} {init_checkpoint} is not a folder, so it is read as a Google "
                          f"TF checkpoint prefix, which needs {field('bert_config_file')} and {field('vocab_file')}")
    return load_google_checkpoint(init_checkpoint, bert_config_file, vocab_file)


def restore_weights(model: keras.Model, pretrained: Pretrained) -> LoadReport:
    """Copies `pretrained.weights` into `model`, all or nothing.

    Raises ValueError naming the weight and both shapes on any shape mismatch (before anything
    is assigned). Logs what is missing (e.g. a fresh classifier head) and unexpected.
    """
    encoder = model.encoder if isinstance(model, (BertClassifier, BertMaskedLM)) else model
    if encoder.config != pretrained.config:
        raise ConfigError(f"model config {encoder.config} does not match {pretrained.source}: {pretrained.config}")
    targets = checkpoint_variables(model)
    assignments = []
    for name, variable in targets.items():
        if name not in pretrained.weights:
            continue
        array = pretrained.weights[name]
        if name in TRANSPOSED_IN_CHECKPOINT:
            array = array.T
        if tuple(array.shape) != tuple(variable.shape):
            raise ConfigError(f"{pretrained.source}: weight {name} has shape {tuple(array.shape)} "
                             f"but the model expects {tuple(variable.shape)}")
        assignments.append((variable, array))
    for variable, array in assignments:
        variable.assign(array.astype(variable.dtype))
    report = LoadReport(
        loaded=[n for n in targets if n in pretrained.weights],
        missing=[n for n in targets if n not in pretrained.weights],
        unexpected=sorted(n for n in pretrained.weights if n not in targets and not _IGNORED_WEIGHTS.search(n)))
    logging.info("Restored %d weights from %s", len(report.loaded), pretrained.source)
    if report.missing:
        logging.info("Not in %s (freshly initialised): %s", pretrained.source, report.missing)
    if report.unexpected:
        logging.warning("Unused weights in %s: %s", pretrained.source, report.unexpected)
    return report


def read_labels(model_path: str) -> list[str] | None:
    """The labels of a classifier export folder (its `labels.json`), None when it has none."""
    labels_file = os.path.join(model_path, LABELS)
    if not (os.path.isdir(model_path) and os.path.exists(labels_file)):
        return None
    labels = read_json(labels_file, "labels file")
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"{labels_file} must be a non-empty JSON list of labels, got {shorten(labels)}")
    return [str(label) for label in labels]


def classifier_head_fits(model_path: str, pretrained: Pretrained, labels: Sequence[str], pooling: str) -> bool:
    """Whether `pretrained` (read from `model_path`) is a classifier of the same labels and pooling,
    so that a model started from it can keep its head."""
    own_labels, head = read_labels(model_path), pretrained.weights.get("output_weights")
    return (head is not None and own_labels == list(labels) and head.shape[0] == len(labels)
            and (pretrained.classifier_pooling or "cls") == pooling)


@dataclasses.dataclass
class Teacher:
    """A fine-tuned BERT classifier ready for inference: model, its tokenizer and its labels;
    `text_inputs`: what it reads (`export_format.SINGLE_TEXT` or `TEXT_PAIR`) when its export
    folder says so, else None."""

    model: BertClassifier
    tokenizer: Tokenizer
    labels: list[str]
    pretrained: Pretrained
    text_inputs: tuple[str, ...] | None = None


def load_teacher(model_path: str, *, bert_config_file: str | None = None, vocab_file: str | None = None,
                 labels: list[str] | None = None) -> Teacher:
    """Loads a fine-tuned classifier: an export folder of `bert_finetune` (labels from its
    `labels.json`), another Hugging Face folder or a Google checkpoint prefix (with `labels`).

    Refuses a model without classifier weights (not fine-tuned), a vocabulary that does not fit
    the config, and labels that do not fit the classifier.
    """
    pretrained = resolve_pretrained(model_path, bert_config_file, vocab_file)
    own_labels = read_labels(model_path)
    if own_labels is not None:
        if labels is not None and list(labels) != own_labels:
            raise ConfigError(f"{os.path.join(model_path, LABELS)} lists {own_labels}, but the task's labels are "
                              f"{list(labels)}")
        labels = own_labels
    if labels is None:
        raise ConfigError(f"{model_path}: no {LABELS}; pass the task's labels")
    head = pretrained.weights.get("output_weights")
    if head is None:
        raise ConfigError(f"{model_path} has no classifier weights (output_weights): it is not a fine-tuned teacher")
    if head.shape[0] != len(labels):
        raise ConfigError(f"{model_path}: the classifier has {head.shape[0]} outputs for {len(labels)} labels {labels}")
    model = BertClassifier(build_encoder(pretrained.config), len(labels), pooling=pretrained.classifier_pooling or "cls")
    restore_weights(model, pretrained)
    text_inputs = read_text_inputs(model_path) if os.path.isdir(model_path) else None  # an export: checked
    return Teacher(model, pretrained.tokenizer(), list(labels), pretrained, text_inputs)


_MLM_HEAD_WEIGHTS = ("cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
                     "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/transform/LayerNorm/beta",
                     "cls/predictions/output_bias")


def has_mlm_head(pretrained: Pretrained) -> bool:
    """True when the source carries BERT's masked-LM head (`cls/predictions/*`): Google BERT
    checkpoints and Hugging Face `BertForMaskedLM` / `BertForPreTraining` folders do; sentence
    embedders (the offline all-MiniLM-L6-v2) and fine-tuned classifiers do not."""
    return all(name in pretrained.weights for name in _MLM_HEAD_WEIGHTS)


def load_masked_lm(pretrained: Pretrained) -> BertMaskedLM:
    """A `BertMaskedLM` with the encoder and the masked-LM head restored from `pretrained`;
    ValueError when the source has no (complete) head."""
    if not has_mlm_head(pretrained):
        missing = [name for name in _MLM_HEAD_WEIGHTS if name not in pretrained.weights]
        raise ConfigError(f"{pretrained.source} has no masked-LM head (missing {missing})")
    model = BertMaskedLM(build_encoder(pretrained.config))
    report = restore_weights(model, pretrained)
    if report.missing:
        raise ConfigError(f"{pretrained.source}: masked-LM weights missing: {report.missing}")
    return model


def select_layers(pretrained: Pretrained, layers: Sequence[int]) -> Pretrained:
    """`pretrained` with only its transformer layers `layers` (1-based, in order), renumbered
    1..len(layers): e.g. layers 2, 4, 6 of a 6-layer model as a 3-layer student's start.
    Embeddings, pooler and everything else are kept."""
    total = pretrained.config.num_hidden_layers
    bad = [layer for layer in layers if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= total]
    if not layers or bad or len(set(layers)) != len(layers):
        raise ConfigError(f"layers {list(layers)} of {pretrained.source}: expected distinct layers in 1..{total}")
    renumber = {layer - 1: i for i, layer in enumerate(layers)}
    weights = {}
    for name, array in pretrained.weights.items():
        match = re.match(r"bert/encoder/layer_(\d+)/", name)
        if match is None:
            weights[name] = array
        elif int(match.group(1)) in renumber:
            weights[f"bert/encoder/layer_{renumber[int(match.group(1))]}/{name[match.end():]}"] = array
    config = dataclasses.replace(pretrained.config, num_hidden_layers=len(layers))
    return dataclasses.replace(pretrained, config=config, weights=weights,
                               source=f"{pretrained.source} (layers {','.join(map(str, layers))})")
