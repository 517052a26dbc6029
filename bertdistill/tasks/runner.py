"""What every job does around its work, from its configs (`bertdistill.configs`): `run` drives
a `trainer.Task` through one sequence (checks, `start`, inputs validated, `prepare_run`, models
built in the strategy's scope, training, evaluation, prediction, export and INT8 gate).

`start` (the distribution strategy before any TensorFlow op, the lock of the run folder) comes
first; `prepare_run` (outputs checked, the run manifest, debris of killed runs) before any heavy
work; `train`: steps and schedule, the optimizer in the strategy scope, the trainer, the
best-by-dev model restored at the end; and the run_classifier-style result files
(`eval_results.txt`, `test_results.tsv`) with the same keys everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bertdistill.export import int8_gate

from bertdistill.training import locks, manifest, optimization, trainer, validation
from bertdistill.configs import RunConfig, TrainConfig
from bertdistill.training.distribute import get_distribution_strategy, is_chief, set_precision_policy
from bertdistill.errors import UserError, field, shorten
from bertdistill.files import atomic_output

RUN_FOLDER = "output_dir"  # the field (and flag) of the run folder
EXPORT_FOLDER = "export"  # inside the run folder
EXPORT_SAMPLE_SIZE = 8  # dev examples the export checks Keras, SavedModel and ONNX on


def run(task: trainer.Task) -> dict | None:
    """Runs a job: `task.check()`; the strategy (`start`), the precision policy and the seed;
    `task.validate()` (nothing to run: None); `prepare_run` of its plan; its models built and
    initialized in the strategy's scope; each stage trained (`train`, keeping the best-by-dev
    weights); evaluation (`eval_results.txt`) and predictions (`test_results.tsv`); on the chief,
    the export from a sample batch of dev and its INT8 gate. Returns the dev results when it
    evaluates."""
    config = task.config
    task.check()
    strategy = start(config.run, lock=not task.dry_run)
    set_precision_policy(task.precision)
    keras.utils.set_random_seed(config.run.seed)
    plan = task.validate()
    if plan is None:
        return None
    chief = is_chief(strategy)
    status = prepare_run(config.run, data_files=plan.data_files, model_config=plan.model_config, inputs=plan.inputs,
                         extra=plan.extra, train=plan.train, chief=chief, ignore_settings=plan.ignore_settings)
    task.prepare(status)
    with strategy.scope():
        task.build_model()
        task.initialize()
    for stage in task.stages() if plan.train else ():
        if stage is not task:  # a stage of a multi-stage job: what only it trains
            with strategy.scope():
                stage.build_model()
            stage.initialize()
        schedule = stage.schedule()
        train(stage, strategy, config.train, config.run, output_dir=schedule.output_dir,
              steps_per_epoch=stage.steps_per_epoch(),
              train_dataset_fn=lambda epoch, stage=stage: stage.build_inputs("train", epoch=epoch),
              eval_dataset=stage.build_inputs("dev") if schedule.evaluate else None,
              num_train_epochs=schedule.num_train_epochs, learning_rate=schedule.learning_rate,
              constant_learning_rate=schedule.constant_learning_rate, lr_multipliers=schedule.lr_multipliers)
        stage.finish_stage(chief)
    step = task.trained_step()
    results = None
    if plan.evaluate:
        results = evaluate_to_file(task, task.build_inputs("dev"), config.run.output_dir, strategy, global_step=step,
                                   num_examples=task.num_examples("dev"))
    if plan.predict:
        predict_to_file(task.eval_model, task.build_inputs("test"), config.run.output_dir, strategy)
    if plan.export and chief:
        folder = os.path.join(config.run.output_dir, EXPORT_FOLDER)
        x, _ = next(iter(task.build_inputs("dev", batch_size=EXPORT_SAMPLE_SIZE)))
        task.export(folder, {name: value.numpy() for name, value in x.items()})
        int8_gate.run_int8_gate_on_examples(folder, task.dev_examples(), max_drop=config.export.int8_max_drop)
    return results


def start(run: RunConfig, *, lock: bool = True) -> tf.distribute.Strategy:
    """What a job that writes its run folder does first, after the checks that need no
    TensorFlow and before anything else: creates the strategy of `run.distribution_strategy`
    (multi-worker collectives can only be set up before the process runs its first TensorFlow
    op) and, on the chief, locks `run.output_dir` for the run's life (`locks.lock_folder`: a
    second run on the folder is refused naming this one; the other workers write only to
    temporary folders). `lock=False`: a run that writes nothing (a dry run)."""
    strategy = get_distribution_strategy(run.distribution_strategy, run.tpu)
    if lock and is_chief(strategy):
        locks.lock_folder(run.output_dir, flag=RUN_FOLDER)
    return strategy


def prepare_run(run: RunConfig | None = None, *, data_files: Sequence[str | None] = (),
                model_config: Mapping | None = None, inputs: Mapping[str, str | None] | None = None,
                outputs: Mapping[str, str | None] | None = None, extra: Mapping | None = None, train: bool = True,
                chief: bool = True, ignore_settings: Iterable[str] = ()) -> str:
    """Makes the outputs of a run ready; every job calls it after its inputs were checked
    (configs validated, model folder resolved, data read) and before building models or writing.

    `inputs`: {field: path} of what the run reads besides `data_files` (a data folder, a
    checkpoint, a teacher export, a transfer set). `outputs`: {field: path} of what it writes,
    default `{"output_dir": run.output_dir}`; the `output_dir` entry is the run folder, any
    other entry an output file. In order:

    1. the outputs keep the rule for outputs (`validation.check_outputs`; a run folder that is
       only evaluated may hold its inputs, its `export/`), and each can be written (nothing is
       created yet);
    2. the run folder, on the chief (`chief`): with `train`, `manifest.check_output_dir` with
       the manifest of `run.settings` (those in `manifest.IGNORED_FLAGS` and `ignore_settings`
       are not compared), `data_files` (sizes + sha256), `model_config` and `extra`: created,
       resumed only when they match, refused naming what differs, or cleared by
       `run.overwrite_output_dir`. Without `train` (evaluation or prediction with a trained
       folder) nothing is cleared or written: the folder may hold inputs (its `export/`) but not
       be one; `model_config` and `extra` (when given) must match its manifest, and a folder
       holding a trained model but no manifest is refused, and a missing folder is not created;
    3. debris of killed runs is removed: the writers' temporary folders (`.<name>.<pid>.tmp`,
       `files.atomic_path`) in the run folder (`validation.clean_debris`) and beside output files.

    Returns "created", "resumed" or "overwritten" (the run folder, with `train`), "evaluating"
    (without `train`), "worker" (not the chief), or "files" (no run folder). Anything the run
    reuses from its folder (a vocabulary, a best model) may be reused only when it is "resumed".
    """
    run = run or RunConfig()
    outputs = {RUN_FOLDER: run.output_dir} if outputs is None else dict(outputs)
    for name, path in outputs.items():
        validation.require(name, path)
    sources = [path for path in [*(inputs or {}).values(), *data_files] if path]
    validation.check_outputs(outputs, sources, folders=(RUN_FOLDER,), may_hold_inputs=() if train else (RUN_FOLDER,))
    for name, path in outputs.items():
        validation.writable_output(name, path, folder=name == RUN_FOLDER)
    files = [path for name, path in outputs.items() if name != RUN_FOLDER]
    output_dir = outputs.get(RUN_FOLDER)
    status = "files"
    if output_dir is not None and not chief:
        status = "worker"
    elif output_dir is not None:
        new = manifest.build_manifest(flags=dict(run.settings), data_files=data_files, model_config=model_config,
                                      extra=extra)
        if train:
            status = manifest.check_output_dir(output_dir, new, overwrite=run.overwrite_output_dir, inputs=sources,
                                               ignore_flags=manifest.IGNORED_FLAGS | set(ignore_settings),
                                               flag_defaults=run.setting_defaults)
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
            raise UserError(f"{field(RUN_FOLDER)}={shorten(output_dir)} holds a trained model ({', '.join(trained)}) "
                            f"but no {manifest.MANIFEST_NAME}: not a run of this version, so it cannot be checked; "
                            f"train it again or choose another {field(RUN_FOLDER)}")
        return
    found = [item for item in manifest.differences({**old, "flags": {}, "data": []}, {**new, "flags": {}, "data": []})
             if not item.startswith("manifest format")]
    if found:
        raise UserError(f"{field(RUN_FOLDER)}={shorten(output_dir)} holds another model: {'; '.join(found[:5])}; "
                        f"pass the settings it was trained with or choose another {field(RUN_FOLDER)}")


def num_train_steps(steps_per_epoch: int, num_train_epochs: float) -> int:
    """Training steps for `num_train_epochs` (fractional epochs allowed; at least one step)."""
    return max(1, int(steps_per_epoch * num_train_epochs))


def train(task: trainer.Task, strategy: tf.distribute.Strategy, config: TrainConfig, run: RunConfig, *,
          train_dataset_fn: Callable[[int], tf.data.Dataset], steps_per_epoch: int,
          eval_dataset: tf.data.Dataset | None, output_dir: str | None = None, num_train_epochs: float | None = None,
          learning_rate: float | None = None, constant_learning_rate: bool = False,
          lr_multipliers: Mapping[str, float] | None = None,
          extra_checkpoint_items: Mapping[str, object] | None = None) -> list[dict]:
    """Trains `task` (models built in `strategy.scope()`) as `config` says, resuming from
    `output_dir` (default `run.output_dir`), and leaves the best-by-dev weights in `task.eval_model`.

    `num_train_epochs` / `learning_rate` override `config`'s (a TinyBERT stage has its own).
    """
    output_dir = output_dir or run.output_dir
    epochs = config.num_train_epochs if num_train_epochs is None else num_train_epochs
    total = num_train_steps(steps_per_epoch, epochs)
    with strategy.scope():
        optimizer = optimization.create_optimizer(
            learning_rate=config.learning_rate if learning_rate is None else learning_rate, num_train_steps=total,
            num_warmup_steps=int(total * config.warmup_proportion), weight_decay=config.weight_decay,
            lr_multipliers=lr_multipliers, constant_learning_rate=constant_learning_rate)
    fit = trainer.Trainer(task, optimizer, strategy=strategy, output_dir=output_dir,
                          max_grad_norm=config.max_grad_norm, save_checkpoints_steps=config.save_checkpoints_steps,
                          log_every_steps=config.log_every_steps, use_xla=config.use_xla,
                          extra_checkpoint_items=extra_checkpoint_items)
    logging.info("Training: %d steps/epoch, %d steps, output in %s", steps_per_epoch, total, output_dir)
    history = fit.fit(train_dataset_fn, num_train_steps=total, steps_per_epoch=steps_per_epoch,
                      eval_dataset=eval_dataset, early_stopping_patience=config.early_stopping_patience,
                      hparams=dict(run.settings if run.hparams is None else run.hparams))
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


def evaluate_to_file(task: trainer.Task, dataset: tf.data.Dataset, output_dir: str, strategy: tf.distribute.Strategy,
                     *, global_step: int, num_examples: int) -> dict:
    """Dev accuracy and loss (`task.evaluate`: of its `eval_model`), logged and written to
    `eval_results.txt`."""
    metrics = task.evaluate(dataset)
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
