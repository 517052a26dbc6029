"""What every training entry point does around the trainer, from its flags: steps and schedule,
the optimizer in the strategy scope, the trainer, the best-by-dev model restored at the end, and
the run_classifier-style result files (`eval_results.txt`, `test_results.tsv`) with the same
keys everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

from bertdistill import optimization, trainer
from bertdistill.distribute import is_chief


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
    """Writes `lines` to `path` atomically (a temporary file beside it, then a rename)."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(path + ".tmp", path)


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
