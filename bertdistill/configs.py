"""Typed configs of the training jobs. A script builds its config once from its flags
(`bertdistill.cli.script_flags`); a library user builds one directly. The library reads only these.

Field names are the scripts' flag names, so an error about a field (`errors.field`) reads as
the flag in a script's error line. Every config is frozen: a run never changes its settings.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from bertdistill.errors import ConfigFieldError, field
from bertdistill.export_format import DEFAULT_INT8_MAX_DROP, INT8_KEEP_FLOAT

OWN_FILE_TASKS = ("tsv", "csv")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run writes and how it runs.

    `settings`: what the run manifest records and compares on resume (a script: its flags' values;
    `manifest.check_output_dir`), `setting_defaults` their defaults (a setting the folder's
    manifest lacks, a flag added since, matches at its default); `hparams`: what TensorBoard's
    hparams dashboard shows (default: `settings`).
    """

    output_dir: str | None = None
    overwrite_output_dir: bool = False
    distribution_strategy: str = "off"
    tpu: str | None = None
    mixed_precision: str = "float32"
    seed: int = 12345
    settings: Mapping[str, object] = dataclasses.field(default_factory=dict)
    setting_defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
    hparams: Mapping[str, object] | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The task's data: the processor of `task_name` and, for a user's own TSV/CSV (`tsv`, `csv`),
    its labels, columns (header names, or 0-based indices without a header), delimiter and header."""

    task_name: str = "sst-2"
    data_dir: str | None = None
    labels: tuple[str, ...] | None = None
    text_a_column: str | None = "sentence"
    text_b_column: str | None = None
    label_column: str | None = "label"
    delimiter: str | None = None
    has_header: bool = True
    skip_bad_rows: bool = False

    @property
    def on_error(self) -> str:
        """The data readers' `on_error`: "skip" bad rows or "raise"."""
        return "skip" if self.skip_bad_rows else "raise"

    @property
    def own_files(self) -> bool:
        return self.task_name.lower() in OWN_FILE_TASKS

    def check_labels(self) -> None:
        """A user's own files need `labels`: at least two, each once (one label would make every
        prediction right)."""
        if not self.own_files:
            return
        if not self.labels:
            raise ConfigFieldError("labels", f"{field('task_name')}={self.task_name} needs {field('labels')} "
                                             "(the label values, comma-separated)")
        if len(set(self.labels)) < 2 or len(set(self.labels)) != len(self.labels):
            raise ConfigFieldError("labels", f"{field('labels')}={','.join(self.labels)}: give at least two labels, "
                                             "each once")

    def split_file(self, split: str) -> str | None:
        """The file of `split` in `data_dir` (None without `data_dir`: tfds)."""
        if not self.data_dir:
            return None
        extension = "csv" if self.task_name.lower() == "csv" else "tsv"
        return os.path.join(self.data_dir, f"{split}.{extension}")

    def describe(self, split: str) -> str:
        """Where `split` comes from, for messages: its file, or the tfds split."""
        return self.split_file(split) or f"tfds {split} split"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop and its optimizer (see `runner.train`, `trainer.Trainer`)."""

    train_batch_size: int = 32
    eval_batch_size: int = 8
    predict_batch_size: int = 8
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    save_checkpoints_steps: int = 1000
    log_every_steps: int = 100
    early_stopping_patience: int = 0
    use_xla: bool = False


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """`<output_dir>/export` after training, the INT8 gate's largest accuracy drop (points) and the
    weight MatMuls a transformer's INT8 model keeps in float32 (`export_format.INT8_KEEP_FLOAT`)."""

    do_export: bool = True
    int8_max_drop: float = DEFAULT_INT8_MAX_DROP
    int8_keep_float: str = INT8_KEEP_FLOAT


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """A BERT-family classifier (the teacher): fine-tune, evaluate, predict, export.

    The model: `init_checkpoint` (a Google checkpoint prefix with `bert_config_file` and
    `vocab_file`, a Hugging Face folder, an export folder; None: the offline model), or
    `bert_config_file` and `vocab_file` alone (a random initialisation). `classifier_pooling`
    None: the checkpoint's own, else "cls". `export.do_export` is whether this run exports.
    """

    run: RunConfig
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    init_checkpoint: str | None = None
    bert_config_file: str | None = None
    vocab_file: str | None = None
    do_lower_case: bool = True
    max_seq_length: int = 128
    classifier_pooling: str | None = None
    layerwise_lr_decay: float = 1.0
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False


@dataclasses.dataclass(frozen=True)
class BiLstmModelConfig:
    """The BiLSTM student's shape (`distil_lstm.model.build_bilstm_classifier`)."""

    embedding_dim: int = 300
    hidden_size: int = 300
    dense_size: int = 400
    dropout: float = 0.1
    pooling: str = "max"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


BILSTM_TRAIN = TrainConfig(learning_rate=1e-3, train_batch_size=50, eval_batch_size=64, predict_batch_size=64,
                           num_train_epochs=10.0)


@dataclasses.dataclass(frozen=True)
class BiLstmConfig:
    """The BiLSTM student: `mode` train (gold labels), distil (a transfer set's teacher logits,
    `augmented_file`, default `<data_dir>/augmented.tsv`, with `distill_loss`) or test (an export
    folder, `model_dir`, default `<output_dir>/export`, on `eval_split`)."""

    run: RunConfig
    mode: str = "train"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = BILSTM_TRAIN
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    model: BiLstmModelConfig = dataclasses.field(default_factory=BiLstmModelConfig)
    do_lower_case: bool = True
    max_seq_length: int = 64
    augmented_file: str | None = None
    distill_loss: str = "mse"
    temperature: float = 1.0
    alpha: float = 0.0
    min_count: int = 1
    max_vocab_size: int = 50000
    word_vectors: str | None = None
    eval_split: str = "dev"
    model_dir: str | None = None


TINYBERT_STAGES = ("intermediate", "prediction")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One TinyBERT stage's epochs and (peak) learning rate."""

    epochs: float
    learning_rate: float


@dataclasses.dataclass(frozen=True)
class TaskDistillConfig:
    """TinyBERT task distillation of `teacher_model` (an export folder) into a student given by
    `student_config` (the teacher's vocabulary; start: `student_init`) or `student_model` (a
    pretrained start, `student_layers` of it); `stages` in order (`TINYBERT_STAGES`), each with
    its settings; `intermediate_loss_weight` > 0 keeps the layer map's terms in stage 2 at that
    weight; `intermediate_dir`: another run's finished stage 1, stage 2's start. `dry_run`:
    describe the layer map and sizes, train nothing."""

    run: RunConfig
    teacher_model: str
    stages: Mapping[str, StageConfig]
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = TrainConfig(eval_batch_size=64, predict_batch_size=64, save_checkpoints_steps=500)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    student_config: str | None = None
    student_model: str | None = None
    student_layers: tuple[int, ...] | None = None
    student_init: str = "teacher_layers"
    augmented_file: str | None = None
    intermediate_max_examples: int | None = None
    temperature: float = 1.0
    hard_label_weight: float = 0.0
    intermediate_loss_weight: float = 0.0
    intermediate_dir: str | None = None
    layer_map: str = "uniform"
    max_seq_length: int = 128
    dry_run: bool = False


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
    """What the two augmentation jobs share: the originals of `input` (a TSV, or a task folder's
    train split read as `data` says; the first `max_examples`), the contiguous shard `shard_index`
    of `num_shards`, `augment_factor` attempts per original seeded per example from `seed` (a
    shard's rows do not depend on the sharding), `chunk_size` originals at a time, the model's
    batches of `batch_size` rows of at most `max_seq_length` tokens; `output`: the TSV written."""

    input: str
    output: str
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    bert_config_file: str | None = None
    vocab_file: str | None = None
    augment_factor: int = 20
    batch_size: int = 256
    max_seq_length: int = 128
    seed: int = 12345
    num_shards: int = 1
    shard_index: int = 0
    max_examples: int | None = None
    chunk_size: int = 2048


@dataclasses.dataclass(frozen=True)
class TransferSetConfig:
    """generate_dataset.py: the originals augmented (Tang et al.: masking with probability
    `p_mask`, a same-kind word with `p_replace` chosen by `replacement`, an n-gram with `p_ngram`;
    `no_augment`: originals only), each labelled by the mean logits of the `models`, run under the
    Keras dtype policy `precision`."""

    augmentation: AugmentationConfig
    models: tuple[str, ...]
    no_augment: bool = False
    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    replacement: str = "auto"
    word_vectors: str | None = None
    precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class TinyBertAugmentationConfig:
    """tinybert/data_augmentation.py: each word replaced with probability `p` by one of its
    `top_k` candidates (the masked LM of `model`, else nearest neighbours in `glove_embs`' first
    `glove_max_words` vectors or in the model's input embeddings)."""

    augmentation: AugmentationConfig
    model: str | None = None
    p: float = 0.4
    top_k: int = 15
    glove_embs: str | None = None
    glove_max_words: int = 100000


@dataclasses.dataclass(frozen=True)
class GeneralDistillConfig:
    """tinybert/general_distill.py: `max_steps` batches of `corpus` sentences (a seeded shuffle
    window of `shuffle_buffer` lines) teaching a student of `student_config` (start: `student_init`)
    the hidden states and attention of `teacher_model` by `layer_map`."""

    run: RunConfig
    student_config: str
    corpus: tuple[str, ...]
    train: TrainConfig = TrainConfig(learning_rate=1e-4, num_train_epochs=1.0, save_checkpoints_steps=500)
    teacher_model: str | None = None
    student_init: str = "teacher_layers"
    layer_map: str = "uniform"
    max_steps: int = 1000
    shuffle_buffer: int = 10000
    max_seq_length: int = 128
