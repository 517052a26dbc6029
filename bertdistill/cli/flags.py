"""The run_classifier-named flags shared by every entry point, defined once, all optional, their
validation (before any work starts), and the configs they make (`bertdistill.configs`).

Entry points call `define_common_flags()` at import time (`bert=False` leaves out what only a
BERT model uses) and `validate_common_flags()` first thing in `main`. Script side: the library
never reads flags.
"""

from __future__ import annotations


from absl import flags

from bertdistill.data import data
from bertdistill.configs import DataConfig
from bertdistill.training.distribute import STRATEGIES
from bertdistill.errors import FlagError
from bertdistill.cli.shared_flags import define_flag


def define_data_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags of every tool that reads data rows (`--skip_bad_rows`); safe to call twice.
    `define_common_flags` calls it; tools without the common flags (generate_dataset.py,
    tinybert/data_augmentation.py) call it themselves."""
    if "skip_bad_rows" in flag_values:
        return
    flags.DEFINE_bool("skip_bad_rows", False, "Skip malformed data rows instead of failing: each file's count "
                      "and first bad lines are reported; a file with no valid row still fails.",
                      flag_values=flag_values)


def on_error(fv: flags.FlagValues = flags.FLAGS) -> str:
    """The `on_error` of the data readers for `--skip_bad_rows`: "skip" or "raise"."""
    return "skip" if fv.skip_bad_rows else "raise"


TASK_FLAGS = ("task_name", "labels", "text_a_column", "text_b_column", "label_column", "delimiter", "has_header")


def define_task_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the task flags (`TASK_FLAGS`: the data processor, and for a user's own TSV/CSV its
    labels, columns, delimiter and header) of every tool that reads a task's data; safe to call twice."""
    if "task_name" in flag_values:
        return
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("task_name", "sst-2", "Task (data processor) name: sst-2, tsv or csv.", **fv)
    flags.DEFINE_list("labels", None, "--task_name=tsv|csv: the label values, comma-separated (e.g. neg,pos).", **fv)
    flags.DEFINE_string("text_a_column", "sentence", "--task_name=tsv|csv: column of the text (a header name, "
                        "or a 0-based index with --nohas_header).", **fv)
    define_flag("text_b_column", flag_values, help="--task_name=tsv|csv: column of the second text of a pair.")
    flags.DEFINE_string("label_column", "label", "--task_name=tsv|csv: column of the label.", **fv)
    define_flag("delimiter", flag_values, help="--task_name=tsv|csv: field delimiter (default: tab for tsv, comma "
                "for csv).")
    define_flag("has_header", flag_values, help="--task_name=tsv|csv: the files start with a header line.")


def task_flag_arguments(fv: flags.FlagValues = flags.FLAGS) -> list[str]:
    """The command-line arguments that give another script the same task: `--task_name` and the
    task flags given."""
    arguments = [f"--task_name={fv.task_name}"]
    for name in TASK_FLAGS[1:]:
        value = fv[name].value
        if not fv[name].present:
            continue
        if isinstance(value, bool):
            arguments.append(f"--{name}" if value else f"--no{name}")
        else:
            arguments.append(f"--{name}={','.join(value) if isinstance(value, list) else value}")
    return arguments


def define_common_flags(flag_values: flags.FlagValues = flags.FLAGS, *, bert: bool = True) -> None:
    """Defines Google run_classifier.py's flags and ours, all optional; safe to call twice.

    `bert=False` leaves out what only a BERT model uses (`--do_train/--do_eval/--do_predict`,
    `--vocab_file`, `--bert_config_file`, `--init_checkpoint`, `--layerwise_lr_decay`).
    """
    if "mixed_precision" in flag_values:
        return
    fv = {"flag_values": flag_values}
    define_task_flags(flag_values)
    define_flag("data_dir", flag_values)
    define_data_flags(flag_values)
    if bert:
        flags.DEFINE_bool("do_train", False, "Train.", **fv)
        flags.DEFINE_bool("do_eval", False, "Evaluate on the dev set.", **fv)
        flags.DEFINE_bool("do_predict", False, "Predict the test set.", **fv)
        define_flag("vocab_file", flag_values)
        define_flag("bert_config_file", flag_values, help="bert_config.json of the pre-trained model (alone, with "
                    "--vocab_file: a randomly initialised model of that shape).")
        define_flag("init_checkpoint", flag_values)
        flags.DEFINE_float("layerwise_lr_decay", 1.0, "LR factor per layer below the top (1.0: off).", **fv)
    flags.DEFINE_bool("do_lower_case", True, "Lower-case the input (uncased models).", **fv)
    define_flag("max_seq_length", flag_values)
    flags.DEFINE_integer("train_batch_size", 32, "Training batch size (global, over all replicas).", **fv)
    flags.DEFINE_integer("eval_batch_size", 8, "Evaluation batch size.", **fv)
    flags.DEFINE_integer("predict_batch_size", 8, "Prediction batch size.", **fv)
    flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of AdamW.", **fv)
    flags.DEFINE_float("num_train_epochs", 3.0, "Training epochs (may be fractional).", **fv)
    flags.DEFINE_float("warmup_proportion", 0.1, "Share of training steps with linear warm-up.", **fv)
    flags.DEFINE_integer("save_checkpoints_steps", 1000, "Steps between checkpoints (also at each epoch end).",
                         **fv)
    flags.DEFINE_integer("log_every_steps", 100, "Steps between progress lines (when stdout is not a terminal) "
                         "and TensorBoard training summaries.", **fv)
    define_flag("output_dir", flag_values)
    define_flag("overwrite_output_dir", flag_values)
    define_flag("mixed_precision", flag_values)
    flags.DEFINE_enum("distribution_strategy", "off", STRATEGIES, "tf.distribute strategy.", **fv)
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --distribution_strategy=tpu.", **fv)
    flags.DEFINE_bool("use_xla", False, "Compile the per-replica train step with XLA.", **fv)
    define_flag("seed", flag_values)
    flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not on LayerNorm or biases).", **fv)
    flags.DEFINE_float("max_grad_norm", 1.0, "Clip the all-reduced gradients to this global norm (0: off).", **fv)
    flags.DEFINE_integer("early_stopping_patience", 0,
                         "Epochs without a better dev accuracy before stopping (0: off).", **fv)
    define_flag("int8_max_drop", flag_values)


def validate_common_flags(fv: flags.FlagValues = flags.FLAGS, *, min_seq_length: int = 3,
                          needs_eval: bool = True) -> None:
    """Refuses flag values that cannot be meant, naming the flag (`FlagError`).

    `min_seq_length`: the shortest `--max_seq_length` a model can use (3 for BERT: [CLS] x [SEP]).
    `needs_eval`: whether this run evaluates on dev (early stopping needs it).
    """
    for name in ("train_batch_size", "eval_batch_size", "predict_batch_size", "save_checkpoints_steps",
                 "log_every_steps"):
        if fv[name].value <= 0:
            raise FlagError(name, f"--{name}={fv[name].value}: must be a positive integer")
    for name in ("learning_rate", "num_train_epochs"):
        if not fv[name].value > 0:
            raise FlagError(name, f"--{name}={fv[name].value}: must be positive")
    if not 0.0 <= fv.warmup_proportion <= 1.0:
        raise FlagError("warmup_proportion", f"--warmup_proportion={fv.warmup_proportion}: must be within [0, 1]")
    if fv.max_seq_length < min_seq_length:
        raise FlagError("max_seq_length", f"--max_seq_length={fv.max_seq_length}: must be at least {min_seq_length}")
    for name in ("weight_decay", "max_grad_norm", "early_stopping_patience", "int8_max_drop"):
        if fv[name].value < 0:
            raise FlagError(name, f"--{name}={fv[name].value}: must not be negative")
    if fv.early_stopping_patience and not needs_eval:
        raise FlagError("early_stopping_patience", "--early_stopping_patience needs an evaluation on dev (add --do_eval)")
    if "layerwise_lr_decay" in fv and not 0.0 < fv.layerwise_lr_decay <= 1.0:
        raise FlagError("layerwise_lr_decay", f"--layerwise_lr_decay={fv.layerwise_lr_decay}: must be within (0, 1]")
    if fv.distribution_strategy == "tpu" and not fv.tpu:
        raise FlagError("tpu", "--distribution_strategy=tpu needs --tpu (a TPU name or grpc:// address)")


def data_config(fv: flags.FlagValues = flags.FLAGS) -> DataConfig:
    """The task flags (`TASK_FLAGS`), `--data_dir` and `--skip_bad_rows` as a `DataConfig`."""
    return DataConfig(task_name=fv.task_name, data_dir=fv["data_dir"].value if "data_dir" in fv else None,
                      labels=tuple(fv.labels) if fv.labels is not None else None, text_a_column=fv.text_a_column,
                      text_b_column=fv.text_b_column, label_column=fv.label_column, delimiter=fv.delimiter,
                      has_header=fv.has_header, skip_bad_rows=fv.skip_bad_rows)


def validate_task_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """`--task_name=tsv|csv` needs `--labels`: at least two, each once (one label would make
    every prediction right)."""
    data_config(fv).check_labels()


def processor_from_flags(fv: flags.FlagValues = flags.FLAGS) -> data.DataProcessor:
    """The data processor of `--task_name`; `tsv`/`csv` take their columns, labels, delimiter and
    header from the flags."""
    return data.processor_from_config(data_config(fv))


def split_file(fv: flags.FlagValues, split: str) -> str | None:
    """The file `--task_name` reads for `split` in `--data_dir` (None with no `--data_dir`: tfds)."""
    return data_config(fv).split_file(split)


def define_augmentation_flags(flag_values: flags.FlagValues = flags.FLAGS, *, model_help: str,
                              augment_factor_help: str, batch_size_help: str, max_seq_length_help: str,
                              chunk_size: int, several_models: bool = False) -> None:
    """The flags of the two data-augmentation scripts (generate_dataset.py, tinybert/data_augmentation.py):
    input/output, the model (a comma-separated list with `several_models`), the task flags (those of
    run_classifier.py: the labels and a folder's train split), sharding and seeding, sizes. Safe to call twice."""
    if "augment_factor" in flag_values:
        return
    fv = {"flag_values": flag_values}
    define_flag("input", flag_values, help="Training TSV (`sentence<TAB>label`, or `sentence<TAB>sentence_b<TAB>label` "
                "for pairs) or a task's data folder (its train split, read as --task_name and its column flags say).")
    define_flag("output", flag_values, help="TSV to write (atomically: a temporary file renamed at the end).")
    (flags.DEFINE_list if several_models else flags.DEFINE_string)("model", None, model_help, **fv)
    define_flag("bert_config_file", flag_values, help="bert_config.json of a Google checkpoint --model.")
    define_flag("vocab_file", flag_values, help="vocab.txt of a Google checkpoint --model.")
    define_flag("augment_factor", flag_values, help=augment_factor_help)
    define_flag("batch_size", flag_values, help=batch_size_help, default=256)
    define_flag("max_seq_length", flag_values, help=max_seq_length_help)
    define_flag("seed", flag_values, help="Augmentation seed (per example: results do not depend on sharding).")
    flags.DEFINE_integer("num_shards", 1, "Split the originals into this many contiguous shards.", **fv)
    flags.DEFINE_integer("shard_index", 0, "The shard to produce (0-based).", **fv)
    flags.DEFINE_integer("max_examples", None, "Use only the first N originals (before sharding).", **fv)
    flags.DEFINE_integer("chunk_size", chunk_size, "Originals processed together (memory, progress).", **fv)
    define_task_flags(flag_values)
    define_data_flags(flag_values)


def validate_augmentation_flags(fv: flags.FlagValues = flags.FLAGS, *, min_seq_length: int) -> None:
    """Refuses the augmentation flags' values that cannot be meant, naming the flag."""
    from bertdistill.training import validation

    for name in ("input", "output"):
        validation.require(name, fv[name].value)
    validation.positive("num_shards", fv.num_shards)
    if not 0 <= fv.shard_index < fv.num_shards:
        raise FlagError("shard_index", f"--shard_index={fv.shard_index} is outside 0..{fv.num_shards - 1} "
                        f"(--num_shards={fv.num_shards})")
    if fv.augment_factor < 0:
        raise FlagError("augment_factor", f"--augment_factor={fv.augment_factor} must be >= 0 (0: originals only)")
    validation.positive("chunk_size", fv.chunk_size)
    if fv.max_examples is not None:
        validation.positive("max_examples", fv.max_examples)
    if fv.max_seq_length < min_seq_length:
        raise FlagError("max_seq_length", f"--max_seq_length={fv.max_seq_length} must be at least {min_seq_length}")
