"""What every entry point does around its work, from its flags: `start` (the distribution
strategy before any TensorFlow op, the lock of `--output_dir`) first; `prepare_run` (outputs
checked, the run manifest, debris of killed runs) before any heavy work; steps and schedule,
the optimizer in the strategy scope, the trainer, the best-by-dev model restored at the end, and
the run_classifier-style result files (`eval_results.txt`, `test_results.tsv`) with the same
keys everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

from bertdistill import locks, manifest, optimization, trainer, validation
from bertdistill.distribute import get_distribution_strategy, is_chief
from bertdistill.errors import UserError, shorten
from bertdistill.files import atomic_output

RUN_FOLDER_FLAG = "output_dir"


def start(fv: flags.FlagValues, *, lock: bool = True) -> tf.distribute.Strategy:
    """What a script that writes `--output_dir` does first, after the flag checks that need no
    TensorFlow and before anything else: creates the strategy of `--distribution_strategy`
    (multi-worker collectives can only be set up before the process runs its first TensorFlow
    op) and, on the chief, locks `--output_dir` for the run's life (`locks.lock_folder`: a second
    run on the folder is refused naming this one; the other workers write only to temporary
    folders). `lock=False`: a run that writes nothing (a dry run)."""
    strategy = get_distribution_strategy(fv.distribution_strategy, fv.tpu)
    if lock and is_chief(strategy):
        locks.lock_folder(fv[RUN_FOLDER_FLAG].value, flag=RUN_FOLDER_FLAG)
    return strategy


def prepare_run(fv: flags.FlagValues, *, data_files: Sequence[str | None] = (), model_config: Mapping | None = None,
                inputs: Mapping[str, str | None] | None = None, outputs: Mapping[str, str | None] | None = None,
                extra: Mapping | None = None, train: bool = True, chief: bool = True,
                ignore_flags: Iterable[str] = ()) -> str:
    """Makes the outputs of a run ready; every entry point calls it after its inputs were checked
    (flags validated, model folder resolved, data read) and before building models or writing.

    `inputs`: {flag: path} of what the run reads besides `data_files` (a data folder, a
    checkpoint, a teacher export, a transfer set). `outputs`: {flag: path} of what it writes,
    default `{"output_dir": fv.output_dir}`; the `output_dir` entry is the run folder, any
    other entry an output file. In order:

    1. the outputs keep the rule for outputs (`validation.check_outputs`; a run folder that is
       only evaluated may hold its inputs, its `export/`), and each can be written (nothing is
       created yet);
    2. the run folder, on the chief (`chief`): with `train`, `manifest.check_output_dir` with
       the manifest of `fv`'s flags (those in `manifest.IGNORED_FLAGS` and `ignore_flags` are
       not compared), `data_files` (sizes + sha256), `model_config` and `extra`: created,
       resumed only when they match, refused naming what differs, or cleared by
       `--overwrite_output_dir`. Without `train` (evaluation or prediction with a trained
       folder) nothing is cleared or written: the folder may hold inputs (its `export/`) but not
       be one; `model_config` and `extra` (when given) must match its manifest, and a folder
       holding a trained model but no manifest is refused, and a missing folder is not created;
    3. debris of killed runs is removed: the writers' temporary folders (`.<name>.<pid>.tmp`,
       `files.atomic_path`) in the run folder (`validation.clean_debris`) and beside output files.

    Returns "created", "resumed" or "overwritten" (the run folder, with `train`), "evaluating"
    (without `train`), "worker" (not the chief), or "files" (no run folder). Anything the run
    reuses from its folder (a vocabulary, a best model) may be reused only when it is "resumed".
    """
    outputs = {RUN_FOLDER_FLAG: fv[RUN_FOLDER_FLAG].value} if outputs is None else dict(outputs)
    for flag, path in outputs.items():
        validation.require(flag, path)
    sources = [path for path in [*(inputs or {}).values(), *data_files] if path]
    validation.check_outputs(outputs, sources, folders=(RUN_FOLDER_FLAG,),
                             may_hold_inputs=() if train else (RUN_FOLDER_FLAG,))
    for flag, path in outputs.items():
        validation.writable_output(flag, path, folder=flag == RUN_FOLDER_FLAG)
    files = [path for flag, path in outputs.items() if flag != RUN_FOLDER_FLAG]
    output_dir = outputs.get(RUN_FOLDER_FLAG)
    status = "files"
    if output_dir is not None and not chief:
        status = "worker"
    elif output_dir is not None:
        new = manifest.build_manifest(flags=manifest.run_flags(fv), data_files=data_files, model_config=model_config,
                                      extra=extra)
        if train:
            status = manifest.check_output_dir(output_dir, new, overwrite=fv.overwrite_output_dir, inputs=sources,
                                               ignore_flags=manifest.IGNORED_FLAGS | set(ignore_flags))
        else:
            _check_trained_folder(output_dir, new)  # created by what writes into it, if the run gets that far
            status = "evaluating"
        validation.clean_debris(output_dir)
    if chief:
        for path in files:
            validation.clean_file_debris(path)
    return status


def _check_trained_folder(output_dir: str, new: Mapping) -> None:
    """For a run that only uses a trained folder: its model must be the one described by `new`."""
    if not os.path.isdir(output_dir) or (new.get("model_config") is None and not new.get("extra")):
        return  # nothing of the folder is used, or nothing to compare (a self-describing export)
    old = manifest.read_manifest(output_dir)
    if old is None:
        trained = [name for name in ("best", "checkpoints", "export") if os.path.exists(os.path.join(output_dir, name))]
        if trained:
            raise UserError(f"--output_dir={shorten(output_dir)} holds a trained model ({', '.join(trained)}) but no "
                            f"{manifest.MANIFEST_NAME}: not a run of this version, so it cannot be checked; "
                            "train it again or choose another --output_dir")
        return
    found = [item for item in manifest.differences({**old, "flags": {}, "data": []}, {**new, "flags": {}, "data": []})
             if not item.startswith("manifest format")]
    if found:
        raise UserError(f"--output_dir={shorten(output_dir)} holds another model: {'; '.join(found[:5])}; "
                        "pass the flags it was trained with or choose another --output_dir")


def num_train_steps(steps_per_epoch: int, num_train_epochs: float) -> int:
    """Training steps for `num_train_epochs` (fractional epochs allowed; at least one step)."""
    return max(1, int(steps_per_epoch * num_train_epochs))


def train_from_flags(task: trainer.Task, strategy: tf.distribute.Strategy, fv: flags.FlagValues, *,
                     train_dataset_fn: Callable[[int], tf.data.Dataset], steps_per_epoch: int,
                     eval_dataset: tf.data.Dataset | None, output_dir: str | None = None,
                     num_train_epochs: float | None = None, learning_rate: float | None = None,
                     constant_learning_rate: bool = False, lr_multipliers: Mapping[str, float] | None = None,
                     extra_checkpoint_items: Mapping[str, object] | None = None) -> list[dict]:
    """Trains `task` (models built in `strategy.scope()`) with the common flags, resuming from
    `output_dir` (default `--output_dir`), and leaves the best-by-dev weights in `task.eval_model`.

    `num_train_epochs` / `learning_rate` override the flags (a TinyBERT stage has its own).
    """
    output_dir = output_dir or fv.output_dir
    epochs = fv.num_train_epochs if num_train_epochs is None else num_train_epochs
    total = num_train_steps(steps_per_epoch, epochs)
    with strategy.scope():
        optimizer = optimization.create_optimizer(
            learning_rate=fv.learning_rate if learning_rate is None else learning_rate, num_train_steps=total,
            num_warmup_steps=int(total * fv.warmup_proportion), weight_decay=fv.weight_decay,
            lr_multipliers=lr_multipliers, constant_learning_rate=constant_learning_rate)
    run = trainer.Trainer(task, optimizer, strategy=strategy, output_dir=output_dir, max_grad_norm=fv.max_grad_norm,
                          save_checkpoints_steps=fv.save_checkpoints_steps, log_every_steps=fv.log_every_steps,
                          use_xla=fv.use_xla, extra_checkpoint_items=extra_checkpoint_items)
    logging.info("Training: %d steps/epoch, %d steps, output in %s", steps_per_epoch, total, output_dir)
    history = run.fit(train_dataset_fn, num_train_steps=total, steps_per_epoch=steps_per_epoch,
                      eval_dataset=eval_dataset, early_stopping_patience=fv.early_stopping_patience,
                      hparams=fv.flag_values_dict())
    if task.eval_model is not None and trainer.restore_best_weights(task.eval_model, output_dir):
        logging.info("Kept the best dev model: %s", trainer.read_best(output_dir))
    return history


def write_lines(path: str, lines: list[str]) -> None:
    """Writes `lines` to `path` atomically."""
    with atomic_output(path) as f:
        f.writelines(line + "\n" for line in lines)


def write_eval_results(output_dir: str, results: Mapping[str, object], strategy: tf.distribute.Strategy) -> None:
    """`eval_results.txt` as run_classifier writes it (`key = value` lines); chief only."""
    for key, value in results.items():
        logging.info("  %s = %s", key, value)
    if is_chief(strategy):
        write_lines(os.path.join(output_dir, "eval_results.txt"), [f"{k} = {v}" for k, v in results.items()])


def evaluate_to_file(model: keras.Model, dataset: tf.data.Dataset, output_dir: str, strategy: tf.distribute.Strategy,
                     *, global_step: int, num_examples: int) -> dict:
    """Dev accuracy and loss of `model`, logged and written to `eval_results.txt`."""
    metrics = trainer.evaluate(model, dataset)
    results = {"eval_accuracy": metrics["accuracy"], "eval_loss": metrics["loss"], "global_step": global_step,
               "eval_examples": num_examples}
    write_eval_results(output_dir, results, strategy)
    return results


def predict_to_file(model: keras.Model, dataset: tf.data.Dataset, output_dir: str,
                    strategy: tf.distribute.Strategy) -> np.ndarray:
    """Class probabilities per example, one tab-separated line each in input order, written to
    `test_results.tsv` as run_classifier does; returns them."""
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(trainer.predict_logits(model, dataset)))
    if is_chief(strategy):
        write_lines(os.path.join(output_dir, "test_results.tsv"),
                    ["\t".join(f"{p:.6f}" for p in row) for row in probabilities])
    return probabilities
