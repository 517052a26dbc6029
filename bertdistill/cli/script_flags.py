"""The flags of the scripts run_pipeline.py chains, the checks of their values, and the typed
configs they make (`bertdistill.configs`), on any `FlagValues`: each script defines its flags on
absl's `FLAGS` at import, checks them first thing in `main` and builds its config once
(`finetune_config`, `bilstm_config`, `task_distill_config`); the library sees only the config.
run_pipeline.py defines each stage's flags on a fresh `FlagValues`, parses the stage's
arguments and runs the same checks before its first stage starts (`check_arguments`). The
checks read no file: a stage's inputs may not exist before the stages before it ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from absl import flags

from bertdistill import errors
from bertdistill.cli import entry

from bertdistill.distill import distill, layer_map

from bertdistill.training import validation
from bertdistill.configs import (TINYBERT_STAGES, AugmentationConfig, BiLstmConfig, BiLstmModelConfig, ExportConfig,
                                 FinetuneConfig, GeneralDistillConfig, RunConfig, StageConfig, TaskDistillConfig,
                                 TinyBertAugmentationConfig, TrainConfig, TransferSetConfig)
from bertdistill.errors import FlagError, UserError
from bertdistill.cli.shared_flags import define_flag
from bertdistill.cli.flags import (data_config, define_augmentation_flags, define_common_flags,
                               validate_augmentation_flags, validate_common_flags, validate_task_flags)
from bertdistill.data.words import BILSTM_POOLINGS, WORD_SPECIAL_TOKENS
from bertdistill.export_format import INT8_KEEP_FLOAT, keep_float_parts


@dataclasses.dataclass(frozen=True)
class ScriptFlags:
    """A script's flag definitions and the checks of their values."""

    define: Callable[[flags.FlagValues], None]
    validate: Callable[[flags.FlagValues], None]


# The configs every training script shares

def own_flags(fv: flags.FlagValues) -> list[flags.Flag]:
    """The program's own flags (not absl's logging/debugging/help flags): the run's settings."""
    return [flag for module, module_flags in fv.flags_by_module_dict().items() if not module.startswith("absl.")
            for flag in module_flags]


def run_config(fv: flags.FlagValues) -> RunConfig:
    """The run folder, strategy, precision and seed flags; the flags' values as the run's settings
    (manifest) and every flag as its TensorBoard hparams."""
    return RunConfig(output_dir=fv.output_dir, overwrite_output_dir=fv.overwrite_output_dir,
                     distribution_strategy=fv.distribution_strategy, tpu=fv.tpu, mixed_precision=fv.mixed_precision,
                     seed=fv.seed, settings={flag.name: flag.value for flag in own_flags(fv)},
                     setting_defaults={flag.name: flag.default for flag in own_flags(fv)},
                     hparams=fv.flag_values_dict())


def train_config(fv: flags.FlagValues) -> TrainConfig:
    """The training flags (`TrainConfig`'s fields, same names)."""
    return TrainConfig(**{item.name: fv[item.name].value for item in dataclasses.fields(TrainConfig)})


def export_config(fv: flags.FlagValues, *, do_export: bool | None = None) -> ExportConfig:
    """`--do_export` (or `do_export` when the script decides), `--int8_max_drop` and the transformer
    scripts' `--int8_keep_float`."""
    return ExportConfig(do_export=fv.do_export if do_export is None else do_export, int8_max_drop=fv.int8_max_drop,
                        int8_keep_float=fv.int8_keep_float if "int8_keep_float" in fv else INT8_KEEP_FLOAT)


def validate_int8_keep_float(fv: flags.FlagValues) -> None:
    try:
        keep_float_parts(fv.int8_keep_float)
    except ValueError as e:
        raise FlagError("int8_keep_float", f"--int8_keep_float={fv.int8_keep_float}: {e}") from None


# bert_finetune/run_classifier.py

def define_run_classifier_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    define_common_flags(fv)
    entry.define_flags(fv)
    define_flag("do_export", fv, help="Write <output_dir>/export (SavedModel, ONNX, INT8): after training by "
                "default; given without --do_train, exports the model trained in --output_dir.")
    define_flag("int8_keep_float", fv)
    flags.DEFINE_enum("classifier_pooling", "cls", ["cls", "mean"],
                      "Classify the [CLS] pooler output or the mean of the token states (an export "
                      "folder's own choice is used unless this flag is given).", flag_values=fv)


def run_classifier_exports(fv: flags.FlagValues) -> bool:
    """Whether run_classifier.py exports: after training by default, or `--do_export` given alone."""
    return fv.do_export and (fv.do_train or fv["do_export"].present)


def validate_run_classifier_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    exporting = run_classifier_exports(fv)
    if not (fv.do_train or fv.do_eval or fv.do_predict or exporting):
        raise FlagError("do_train", "at least one of --do_train, --do_eval, --do_predict or --do_export must be set")
    validation.require("output_dir", fv.output_dir)
    validate_common_flags(fv, needs_eval=fv.do_eval)
    validate_int8_keep_float(fv)
    validate_task_flags(fv)


def finetune_config(fv: flags.FlagValues = flags.FLAGS) -> FinetuneConfig:
    """run_classifier.py's config (after `validate_run_classifier_flags`)."""
    return FinetuneConfig(
        run=run_config(fv), data=data_config(fv), train=train_config(fv),
        export=export_config(fv, do_export=run_classifier_exports(fv)), init_checkpoint=fv.init_checkpoint,
        bert_config_file=fv.bert_config_file, vocab_file=fv.vocab_file, do_lower_case=fv.do_lower_case,
        max_seq_length=fv.max_seq_length,
        classifier_pooling=fv.classifier_pooling if fv["classifier_pooling"].present else None,
        layerwise_lr_decay=fv.layerwise_lr_decay, do_train=fv.do_train, do_eval=fv.do_eval, do_predict=fv.do_predict)


# generate_dataset.py

GENERATE_MODEL_HELP = (
    "Teachers, comma-separated: export folders of bert_finetune, Hugging Face folders or Google checkpoint "
    "prefixes (with --bert_config_file and --vocab_file), sharing vocabulary, lower-casing and labels. "
    "The transfer set gets the mean of their logits; replacement words from input embeddings "
    "(--replacement=teacher_embeddings) come from the first teacher's.")


def define_generate_dataset_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    flags.DEFINE_bool("no_augment", False, "Only label the original sentences.", flag_values=fv)
    flags.DEFINE_float("p_mask", 0.1, "Per-word probability of [MASK].", flag_values=fv)
    flags.DEFINE_float("p_replace", 0.1, "Per-word probability of a same-kind replacement.", flag_values=fv)
    flags.DEFINE_float("p_ngram", 0.25, "Per-sentence probability of keeping only a random n-gram (n in 1..5).",
                       flag_values=fv)
    flags.DEFINE_enum("replacement", "auto", ["auto", "pos", "word_vectors", "teacher_embeddings"],
                      "How a replacement word is chosen (auto: pos, else word_vectors, else teacher_embeddings).",
                      flag_values=fv)
    define_flag("word_vectors", fv, help="GloVe/word2vec text file for --replacement=word_vectors.")
    define_flag("mixed_precision", fv, help="Precision policy of the teachers' forward passes (the logits are "
                "written as float32): mixed_bfloat16 labels about 1.5x as fast on CPUs with bf16 units.")
    define_augmentation_flags(
        fv, model_help=GENERATE_MODEL_HELP,
        augment_factor_help="Augmentation attempts per original (Tang et al.: 20).",
        batch_size_help="Teacher inference batch size.", max_seq_length_help="Teacher's maximum WordPiece tokens.",
        chunk_size=2048, several_models=True)
    entry.define_flags(fv)


def validate_generate_dataset_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    validation.require("model", fv.model)
    if "" in fv.model:
        raise FlagError("model", f"--model={','.join(fv.model)} has an empty entry: give comma-separated folders")
    validate_augmentation_flags(fv, min_seq_length=3)
    for name in ("p_mask", "p_replace", "p_ngram"):
        validation.in_range(name, fv[name].value, 0.0, 1.0)
    if fv.replacement == "word_vectors" and not fv.word_vectors:
        raise FlagError("word_vectors", "--replacement=word_vectors needs --word_vectors")


def augmentation_config(fv: flags.FlagValues) -> AugmentationConfig:
    """The flags both augmentation scripts share (`define_augmentation_flags`) as a config."""
    return AugmentationConfig(
        input=fv.input, output=fv.output, data=data_config(fv), bert_config_file=fv.bert_config_file,
        vocab_file=fv.vocab_file, augment_factor=fv.augment_factor, batch_size=fv.batch_size,
        max_seq_length=fv.max_seq_length, seed=fv.seed, num_shards=fv.num_shards, shard_index=fv.shard_index,
        max_examples=fv.max_examples, chunk_size=fv.chunk_size)


def transfer_set_config(fv: flags.FlagValues = flags.FLAGS) -> TransferSetConfig:
    """generate_dataset.py's config (after `validate_generate_dataset_flags`)."""
    return TransferSetConfig(
        augmentation=augmentation_config(fv), models=tuple(fv.model), no_augment=fv.no_augment, p_mask=fv.p_mask,
        p_replace=fv.p_replace, p_ngram=fv.p_ngram, replacement=fv.replacement, word_vectors=fv.word_vectors,
        precision=fv.mixed_precision)


# tinybert/data_augmentation.py

def define_tinybert_augmentation_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    flags.DEFINE_float("p", 0.4, "Per-word probability of replacing a word that has candidates.", flag_values=fv)
    define_flag("top_k", fv)
    flags.DEFINE_string("glove_embs", None, "GloVe/word2vec text file for the neighbours (default: the model's "
                        "input embeddings).", flag_values=fv)
    flags.DEFINE_integer("glove_max_words", 100000, "Read only the first N word vectors (the reference: 100,000).",
                         flag_values=fv)
    define_augmentation_flags(
        fv, model_help="BERT with its MLM head: a Hugging Face folder (BertForMaskedLM / BertForPreTraining), a "
                       "Google checkpoint prefix (with --bert_config_file and --vocab_file) or one of our export "
                       "folders. Default: the offline all-MiniLM-L6-v2 (no MLM head: neighbours only).",
        augment_factor_help="Replacement passes per original (TinyBERT's N; 20 for SST-2).",
        batch_size_help="Masked rows per MLM forward pass (1: one pass per word, the reference).",
        max_seq_length_help="WordPiece tokens per MLM row ([CLS] masked [SEP] original [SEP]).", chunk_size=1024)
    entry.define_flags(fv)


def validate_tinybert_augmentation_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    validate_augmentation_flags(fv, min_seq_length=5)
    validation.in_range("p", fv.p, 0.0, 1.0)
    for name in ("top_k", "glove_max_words"):
        validation.positive(name, fv[name].value)
    validation.model_path("model", fv.model)


def tinybert_augmentation_config(fv: flags.FlagValues = flags.FLAGS) -> TinyBertAugmentationConfig:
    """tinybert/data_augmentation.py's config (after `validate_tinybert_augmentation_flags`)."""
    return TinyBertAugmentationConfig(augmentation=augmentation_config(fv), model=fv.model, p=fv.p, top_k=fv.top_k,
                                      glove_embs=fv.glove_embs, glove_max_words=fv.glove_max_words)


def check_temperature_flags(fv: flags.FlagValues, weight: str) -> None:
    """--temperature and the hard-label weight --<weight>, by `distill.check_temperature`."""
    try:
        distill.check_temperature(fv.temperature, fv[weight].value, ("--temperature", f"--{weight}"))
    except ValueError as e:
        raise FlagError("temperature", str(e)) from None


# distil_lstm/main.py

BILSTM_MODEL_ARGS = ("embedding_dim", "hidden_size", "dense_size", "dropout", "pooling")


def define_distil_lstm_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    define_common_flags(fv, bert=False)
    entry.define_flags(fv)
    kw = {"flag_values": fv}
    flags.DEFINE_enum("mode", None, ["train", "test", "distil"], "What to do.", **kw)
    define_flag("augmented_file", fv, help="Transfer set TSV for --mode=distil (default: <data_dir>/augmented.tsv).")
    flags.DEFINE_enum("distill_loss", "mse", list(distill.STORED_LOGITS_LOSSES),
                      "mse on logits (Tang et al.) or kd (Hinton).", **kw)
    define_flag("temperature", fv, help="Softmax temperature of the kd loss.")
    flags.DEFINE_float("alpha", 0.0, "Weight of the hard-label loss in the kd loss.", **kw)
    flags.DEFINE_integer("embedding_dim", 300, "Word embedding size.", **kw)
    flags.DEFINE_integer("hidden_size", 300, "LSTM units per direction.", **kw)
    flags.DEFINE_integer("dense_size", 400, "Units of the ReLU layer before the logits.", **kw)
    flags.DEFINE_float("dropout", 0.1, "Dropout after the embeddings and the ReLU layer.", **kw)
    flags.DEFINE_enum("pooling", "max", list(BILSTM_POOLINGS), "Pooling of the BiLSTM outputs over time.", **kw)
    flags.DEFINE_integer("min_count", 1, "Minimum count of a word to enter the vocabulary.", **kw)
    flags.DEFINE_integer("max_vocab_size", 50000, "Maximum vocabulary size, special tokens included.", **kw)
    define_flag("word_vectors", fv, help="Initial word embeddings: a GloVe/word2vec text file, or a BERT-family "
                "model (minilm, mpnet, a Hugging Face or export folder) whose input embeddings give each word the "
                "mean of its word pieces' vectors. Their dimension must equal --embedding_dim.")
    flags.DEFINE_enum("eval_split", "dev", ["dev", "test"], "--mode=test: accuracy on dev, or predictions for test.",
                      **kw)
    define_flag("model_dir", fv, help="--mode=test: an export folder (default: <output_dir>/export).")
    define_flag("do_export", fv)
    for name, value in (("learning_rate", 1e-3), ("train_batch_size", 50), ("eval_batch_size", 64),
                        ("predict_batch_size", 64), ("max_seq_length", 64), ("num_train_epochs", 10.0)):
        fv.set_default(name, value)


def validate_distil_lstm_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    if not fv.mode:
        raise FlagError("mode", "--mode is required: train, test or distil")
    validation.require("output_dir", fv.output_dir)
    validate_common_flags(fv, min_seq_length=1)
    for name in ("embedding_dim", "hidden_size", "dense_size", "min_count", "max_vocab_size"):
        validation.positive(name, fv[name].value)
    validation.in_range("dropout", fv.dropout, 0.0, 0.99)
    check_temperature_flags(fv, "alpha")
    if fv.max_vocab_size <= len(WORD_SPECIAL_TOKENS):
        raise FlagError("max_vocab_size", f"--max_vocab_size={fv.max_vocab_size} leaves no room for words "
                        f"(the {len(WORD_SPECIAL_TOKENS)} special tokens count)")
    validate_task_flags(fv)


def bilstm_config(fv: flags.FlagValues = flags.FLAGS) -> BiLstmConfig:
    """distil_lstm/main.py's config (after `validate_distil_lstm_flags`)."""
    return BiLstmConfig(
        run=run_config(fv), mode=fv.mode, data=data_config(fv), train=train_config(fv), export=export_config(fv),
        model=BiLstmModelConfig(**{name: fv[name].value for name in BILSTM_MODEL_ARGS}),
        do_lower_case=fv.do_lower_case, max_seq_length=fv.max_seq_length, augmented_file=fv.augmented_file,
        distill_loss=fv.distill_loss, temperature=fv.temperature, alpha=fv.alpha, min_count=fv.min_count,
        max_vocab_size=fv.max_vocab_size, word_vectors=fv.word_vectors, eval_split=fv.eval_split,
        model_dir=fv.model_dir)


# tinybert/task_distill.py


def define_task_distill_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    define_common_flags(fv, bert=False)
    entry.define_flags(fv)
    kw = {"flag_values": fv}
    define_flag("teacher_model", fv)
    define_flag("student_config", fv, help="The student's bert_config.json / config.json (layers, hidden size, "
                "heads, intermediate size; the vocabulary, and so vocab_size, is the teacher's).")
    flags.DEFINE_string("student_model", None, "The student's pretrained start instead of --student_config: a "
                        "folder from general_distill.py, a Hugging Face BERT folder or a short name (minilm), with "
                        "its own vocabulary (see --student_layers).", **kw)
    flags.DEFINE_list("student_layers", None, "With --student_model: which of its transformer layers (1-based) the "
                      "student keeps, e.g. 2,4,6 (default: all).", **kw)
    define_flag("student_init", fv)
    define_flag("augmented_file", fv, help="Training TSV from tinybert/data_augmentation.py or "
                "generate_dataset.py (default: the task's train split).")
    flags.DEFINE_enum("stage", "both", [*TINYBERT_STAGES, "both"], "Which stage(s) to run.", **kw)
    define_flag("intermediate_epochs", fv, help="Stage 1 epochs (--stage=both).")
    define_flag("prediction_epochs", fv, help="Stage 2 epochs (--stage=both).")
    flags.DEFINE_float("intermediate_learning_rate", 5e-5, "Stage 1 learning rate (constant; --stage=both).", **kw)
    flags.DEFINE_float("prediction_learning_rate", 3e-5, "Stage 2 peak learning rate (--stage=both).", **kw)
    define_flag("intermediate_max_examples", fv)
    define_flag("temperature", fv, help="Softmax temperature of the prediction-layer loss.")
    flags.DEFINE_float("hard_label_weight", 0.0, "Weight of the gold-label cross-entropy in stage 2 (1.0: no "
                       "teacher).", **kw)
    flags.DEFINE_float("intermediate_loss_weight", 0.0, "Stage 2 also fits the layer map's terms (stage 1's "
                       "losses, teacher online, from stage 1's projections) at this weight beside the logits "
                       "(0: the logits alone, TinyBERT's stage 2).", **kw)
    flags.DEFINE_string("intermediate_dir", None, "With --stage=prediction: another run's finished stage 1 (its "
                        "--output_dir, or that folder's intermediate/); stage 2 starts from its student (and "
                        "projections) instead of this run's own, e.g. to try stage 2's seeds or learning rates "
                        "without training stage 1 again.", **kw)
    define_flag("layer_map", fv)
    flags.DEFINE_bool("dry_run", False, "Print the resolved layer map and parameter counts, then exit.", **kw)
    define_flag("do_export", fv, help="Export the best student to <output_dir>/export.")
    define_flag("int8_keep_float", fv)
    for name, value in (("save_checkpoints_steps", 500), ("eval_batch_size", 64), ("predict_batch_size", 64)):
        fv.set_default(name, value)


def tinybert_stages(fv: flags.FlagValues) -> list[str]:
    """The stages `--stage` runs, in order."""
    return list(TINYBERT_STAGES) if fv.stage == "both" else [fv.stage]


def tinybert_stage_settings(fv: flags.FlagValues, stage: str) -> tuple[float, float]:
    """(epochs, learning rate) of `stage`: the generic flags for a single stage, the per-stage ones for both."""
    if fv.stage == "both":
        for name in ("num_train_epochs", "learning_rate"):
            if fv[name].present:
                raise FlagError(name, f"--{name} applies to a single --stage; with --stage=both use "
                                "--intermediate_epochs/--prediction_epochs and the per-stage learning rates")
        return fv[f"{stage}_epochs"].value, fv[f"{stage}_learning_rate"].value
    epochs = fv.num_train_epochs if fv["num_train_epochs"].present else fv[f"{stage}_epochs"].value
    rate = fv.learning_rate if fv["learning_rate"].present else fv[f"{stage}_learning_rate"].value
    return epochs, rate


def student_layers(fv: flags.FlagValues) -> list[int] | None:
    """--student_layers as 1-based layer numbers (checked against the model when it is loaded), or None."""
    if fv.student_layers is None:
        return None
    if not fv.student_model:
        raise FlagError("student_layers", "--student_layers picks layers of a --student_model")
    try:
        return [int(layer) for layer in fv.student_layers]
    except ValueError:
        raise FlagError("student_layers", f"--student_layers={','.join(fv.student_layers)}: expected layer "
                                          "numbers, e.g. 2,4,6") from None


def check_layer_map(fv: flags.FlagValues) -> None:
    """--layer_map as far as it can be checked before the models load (a rule's features, a JSON
    file's entries)."""
    try:
        layer_map.check_layer_map_spec(fv.layer_map)
    except layer_map.LayerMapError as e:
        raise FlagError("layer_map", str(e)) from None


def validate_task_distill_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    for name in ("teacher_model", "output_dir"):
        validation.require(name, fv[name].value)
    validate_common_flags(fv)
    check_temperature_flags(fv, "hard_label_weight")
    validation.non_negative("intermediate_loss_weight", fv.intermediate_loss_weight)
    if fv.intermediate_dir and fv.stage != "prediction":
        raise FlagError("intermediate_dir", "--intermediate_dir starts stage 2 from another run's stage 1: use it "
                        "with --stage=prediction")
    for stage in tinybert_stages(fv):
        epochs, rate = tinybert_stage_settings(fv, stage)
        validation.positive(f"{stage}_epochs", epochs)
        validation.positive(f"{stage}_learning_rate", rate)
    if bool(fv.student_config) == bool(fv.student_model):
        raise FlagError("student_config", "give exactly one of --student_config and --student_model")
    student_layers(fv)
    check_layer_map(fv)
    validate_int8_keep_float(fv)
    validate_task_flags(fv)


def task_distill_config(fv: flags.FlagValues = flags.FLAGS) -> TaskDistillConfig:
    """task_distill.py's config (after `validate_task_distill_flags`)."""
    layers = student_layers(fv)
    return TaskDistillConfig(
        run=run_config(fv), teacher_model=fv.teacher_model,
        stages={stage: StageConfig(*tinybert_stage_settings(fv, stage)) for stage in tinybert_stages(fv)},
        data=data_config(fv), train=train_config(fv), export=export_config(fv), student_config=fv.student_config,
        student_model=fv.student_model, student_layers=tuple(layers) if layers is not None else None,
        student_init=fv.student_init, augmented_file=fv.augmented_file,
        intermediate_max_examples=fv.intermediate_max_examples, temperature=fv.temperature,
        hard_label_weight=fv.hard_label_weight, intermediate_loss_weight=fv.intermediate_loss_weight,
        intermediate_dir=fv.intermediate_dir, layer_map=fv.layer_map, max_seq_length=fv.max_seq_length,
        dry_run=fv.dry_run)


# tinybert/general_distill.py

def define_general_distill_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    define_common_flags(fv, bert=False)
    entry.define_flags(fv)
    define_flag("teacher_model", fv, help="The pre-trained teacher: a Hugging Face folder (default: the offline "
                "all-MiniLM-L6-v2).")
    define_flag("student_config", fv)
    define_flag("student_init", fv)
    flags.DEFINE_list("corpus", None, "Plain-text corpus files (comma-separated; globs allowed).", flag_values=fv)
    flags.DEFINE_integer("max_steps", 1000, "Training steps (batches).", flag_values=fv)
    flags.DEFINE_integer("shuffle_buffer", 10000, "Lines in the seeded shuffle window.", flag_values=fv)
    define_flag("layer_map", fv)
    train = GeneralDistillConfig.__dataclass_fields__["train"].default
    for name in ("learning_rate", "save_checkpoints_steps", "num_train_epochs"):
        fv.set_default(name, getattr(train, name))


def validate_general_distill_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    for name in ("student_config", "corpus", "output_dir"):
        validation.require(name, fv[name].value)
    validate_common_flags(fv)
    for name in ("max_steps", "shuffle_buffer"):
        validation.positive(name, fv[name].value)
    validation.model_path("teacher_model", fv.teacher_model)
    check_layer_map(fv)


def general_distill_config(fv: flags.FlagValues = flags.FLAGS) -> GeneralDistillConfig:
    """tinybert/general_distill.py's config (after `validate_general_distill_flags`)."""
    return GeneralDistillConfig(
        run=run_config(fv), student_config=fv.student_config, corpus=tuple(fv.corpus), train=train_config(fv),
        teacher_model=fv.teacher_model, student_init=fv.student_init, layer_map=fv.layer_map,
        max_steps=fv.max_steps, shuffle_buffer=fv.shuffle_buffer, max_seq_length=fv.max_seq_length)


SCRIPTS = {
    "bert_finetune/run_classifier.py": ScriptFlags(define_run_classifier_flags, validate_run_classifier_flags),
    "generate_dataset.py": ScriptFlags(define_generate_dataset_flags, validate_generate_dataset_flags),
    "tinybert/data_augmentation.py": ScriptFlags(define_tinybert_augmentation_flags,
                                                 validate_tinybert_augmentation_flags),
    "tinybert/general_distill.py": ScriptFlags(define_general_distill_flags, validate_general_distill_flags),
    "distil_lstm/main.py": ScriptFlags(define_distil_lstm_flags, validate_distil_lstm_flags),
    "tinybert/task_distill.py": ScriptFlags(define_task_distill_flags, validate_task_distill_flags),
}


def parse_arguments(script: str, args: Sequence[str]) -> flags.FlagValues:
    """The flags of `script` (a key of `SCRIPTS`) parsed from `args` (`--flag=value` items) on a
    fresh `FlagValues`; an unknown flag or a bad value raises as in the script (absl's flag
    error, or a `FlagError` for NaN or infinity)."""
    fv = flags.FlagValues()
    SCRIPTS[script].define(fv)
    fv([script, *args])
    entry.check_finite(fv)
    return fv


def check_arguments(script: str, args: Sequence[str]) -> flags.FlagValues:
    """`parse_arguments`, then the script's own checks of the values; a user error names the
    flags as the script would (`errors.message`)."""
    try:
        fv = parse_arguments(script, args)
        SCRIPTS[script].validate(fv)
    except Exception as error:  # noqa: BLE001 - re-raised as is unless a user error
        if not errors.is_user_error(error):
            raise
        raise UserError(errors.message(error, {})) from None
    return fv
