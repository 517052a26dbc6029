"""Tiny export folders shared by the predictor and server tests: a BERT classifier and a BiLSTM
student, each written by its training job's own exporter (`FinetuneTask.export`,
`BiLstmTask.export`) from a config, with the Keras model's own probabilities for checking the
exported ones. Nothing is trained: the job reads its data, builds and initializes its model, and
exports it as `runner.run` would.

Built once per test process (both test modules ask for them)."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np

from bertdistill.models import checkpoints

from bertdistill.training import trainer
from bertdistill.models.bert import BertClassifier, BertEncoder
from bertdistill.configs import (BiLstmConfig, BiLstmModelConfig, DataConfig, FinetuneConfig, RunConfig,
                                 TrainConfig)
from bertdistill.export_format import bert_features, pad
from bertdistill.tasks.finetune import FinetuneTask
from bertdistill.tasks.runner import EXPORT_SAMPLE_SIZE
from bertdistill.data.tokenization import Tokenizer
from bertdistill.data.words import PAD
from distil_lstm.task import BiLstmTask
from tests.bert_fixtures import tiny_config, write_vocab

BERT_MAX_SEQ_LENGTH = 8
LSTM_MAX_SEQ_LENGTH = 6
LABELS = ["neg", "pos"]
TEXTS = ["the movie was great", "bad plot", "not good , dull film", "a fun film", "The Movie Was Not Bad",
         "plots", "", "the movie was fun but the plot was dull and the film was not good at all ."]


@dataclasses.dataclass
class TinyExport:
    folder: str
    model: keras.Model
    encode: object  # texts -> padded features the Keras model takes

    def keras_probabilities(self, texts) -> np.ndarray:
        logits = keras.ops.convert_to_numpy(self.model(self.encode(texts), training=False))
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def _write_data(folder, train_texts) -> DataConfig:
    """A TSV task (`neg`/`pos`) with the given training texts and the non-empty TEXTS as dev."""
    folder.mkdir(parents=True)
    for split, texts in (("train", train_texts), ("dev", [t for t in TEXTS if t])):
        rows = "".join(f"{text}\t{LABELS[i % 2]}\n" for i, text in enumerate(texts))
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    return DataConfig(task_name="tsv", labels=tuple(LABELS), data_dir=str(folder))


def _export(task: trainer.Task, folder: str, scale: float = 1.0) -> None:
    """The job's steps up to its export, without training (`runner.run`'s order); the weights
    are multiplied by `scale` first (larger weights: clearly different probabilities per text)."""
    task.check()
    task.validate()
    task.prepare("created")
    task.build_model()
    task.initialize()
    if scale != 1.0:
        for weight in task.eval_model.weights:
            weight.assign(weight * scale)
    x, _ = next(iter(task.build_inputs("dev", batch_size=EXPORT_SAMPLE_SIZE)))
    task.export(folder, {name: value.numpy() for name, value in x.items()})


def build_bert(root) -> TinyExport:
    keras.utils.set_random_seed(1)
    vocab = write_vocab(root / "vocab.txt")
    # A wide initialisation so that different texts get clearly different probabilities.
    start = BertClassifier(BertEncoder(tiny_config(initializer_range=0.5)), num_labels=2)
    checkpoints.save_hf_folder(start, str(root / "bert_start"), vocab, LABELS, True)
    config = FinetuneConfig(run=RunConfig(output_dir=str(root / "bert")),
                            data=_write_data(root / "bert_data", [t for t in TEXTS if t]), init_checkpoint=str(root / "bert_start"), max_seq_length=BERT_MAX_SEQ_LENGTH)
    task = FinetuneTask(config)
    _export(task, str(root / "bert" / "export"))
    tokenizer = Tokenizer(vocab, True)

    def encode(texts):
        return bert_features(*tokenizer.encode_batch(texts, max_seq_length=BERT_MAX_SEQ_LENGTH), tokenizer.pad_id)

    return TinyExport(str(root / "bert" / "export"), task.eval_model, encode)


def build_bilstm(root) -> TinyExport:
    keras.utils.set_random_seed(2)
    (root / "lstm").mkdir()
    config = BiLstmConfig(run=RunConfig(output_dir=str(root / "lstm")),
                          data=_write_data(root / "lstm_data", TEXTS[:5] + ["good fun great"]),
                          train=TrainConfig(eval_batch_size=64), max_seq_length=LSTM_MAX_SEQ_LENGTH,
                          model=BiLstmModelConfig(embedding_dim=8, hidden_size=8, dense_size=8, dropout=0.0))
    task = BiLstmTask(config)
    _export(task, str(root / "lstm" / "export"), scale=4.0)

    def encode(texts):
        rows = [task.vocab.encode(text, LSTM_MAX_SEQ_LENGTH) for text in texts]
        return {"input_ids": pad(rows, task.vocab.ids[PAD])}

    return TinyExport(str(root / "lstm" / "export"), task.eval_model, encode)


_BUILT: dict[str, TinyExport] = {}


def tiny_exports(tmp_path_factory) -> dict[str, TinyExport]:
    """{"bert": ..., "lstm": ...}, built on first use."""
    if not _BUILT:
        root = tmp_path_factory.mktemp("exports")
        _BUILT.update(bert=build_bert(root), lstm=build_bilstm(root))
    return _BUILT
