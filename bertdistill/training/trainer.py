"""One distributed custom training loop for every model (the teacher, the BiLSTM, TinyBERT).

A model-specific step is a small `Task`: its loss terms, the model evaluated on dev, and what
to checkpoint. `Trainer` runs it under any `tf.distribute` strategy, as TF Model Garden's Orbit
does (Keras 3's `Model.fit` does not run under `MultiWorkerMirroredStrategy`):

- a `tf.function` step runs `strategy.run` over `strategy.experimental_distribute_dataset`
  (auto-sharded by data across workers); every worker runs the same number of steps;
- each replica computes the SUM of its examples' losses and its gradients; one all-reduce sums
  the gradients, the loss terms and the example counts; dividing by the global example count
  gives the mean over the global batch (what `tf.nn.compute_average_loss` computes, also for
  partial batches); the summed gradients are clipped by their global norm (`max_grad_norm`) and
  applied by an optimizer that does not reduce them again (`optimization.create_optimizer`).
  Keras' own `clipnorm` would clip each replica's gradients before the sum;
- under `mixed_float16` the loss is scaled by Keras' `LossScaleOptimizer`, which unscales, skips
  overflowing steps and adapts the scale; the norm used for clipping is the unscaled one.

Resume. A `tf.train.CheckpointManager` in `<output_dir>/checkpoints` holds the task's models,
the optimizer (slots, iterations, loss scale), the random-generator states of the models'
dropout layers and `step`, the number of batches consumed. Training is a sequence of epochs of
`steps_per_epoch` batches; `train_dataset_fn(epoch)` must give the same batches whenever it is
called with the same epoch (a seeded shuffle). A restarted run restores the latest checkpoint
and continues the interrupted epoch from the next unseen batch: no step is redone, no batch is
seen twice, and the result equals an uninterrupted run's, dropout included.

Each epoch ends with an evaluation on the dev set (when given); the best-by-dev-accuracy weights
go to `<output_dir>/best/` (`model.weights.h5`, `metrics.json`), and training stops early after
`early_stopping_patience` epochs without a strictly better dev accuracy (decided from
`metrics.json`, so it survives restarts). A loss that is not finite (or, without loss scaling, a
gradient norm that is not finite) stops the run with `TrainingDiverged`, naming the step; the
last checkpoint is the last good one.

Output. Progress: a Keras `Progbar` on a terminal, else one log line every `log_every_steps`
(step/total, loss, examples/s, ETA). TensorBoard in `<output_dir>/tensorboard`: `train/` gets
every loss term, `loss`, `learning_rate`, `grad_norm` and `examples_per_second` (the loss terms
averaged over the steps since the previous point) every `log_every_steps` steps and at the end of
every epoch, so also of every run; `validation/` gets `accuracy` and `loss` at each evaluation.
Only the chief writes outputs; the other workers save their (collective) checkpoints to a
temporary folder and restore from the chief's (shared file system).

Test-only hook: when the environment variable `BERTDISTILL_TEST_KILL_AT_STEP=N` (an integer >= 1)
is set, the process sends itself SIGKILL right after it has written (completely, state file
included) the first checkpoint whose global step (`step` above: batches consumed by the run,
earlier runs of the same folder included) is >= N; every Trainer of the process checks its own
steps (TinyBERT's two stages count separately). Kill-and-resume tests use it to kill a real script
at a known checkpoint instead of polling for one. Never set it outside tests, and do not pass it
on to the run that resumes (that run would be killed too). A value that is not an integer >= 1 is
a ValueError when the Trainer is created.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams_api

from bertdistill.training.distribute import is_chief
from bertdistill.errors import UserError, field
from bertdistill.files import atomic_output, atomic_path
from bertdistill.metrics import accuracy


TEST_KILL_AT_STEP = "BERTDISTILL_TEST_KILL_AT_STEP"


def _test_kill_at_step() -> int | None:
    """The step of the test-only kill hook (module docstring), or None when it is not set."""
    value = os.environ.get(TEST_KILL_AT_STEP)
    if not value:
        return None
    try:
        step = int(value)
    except ValueError:
        step = 0
    if step < 1:
        raise ValueError(f"{TEST_KILL_AT_STEP}={value!r}: expected an integer >= 1 (a test-only hook)")
    return step


class TrainingDiverged(UserError):
    """The loss or the gradient norm stopped being finite."""


def _non_finite_count(batch) -> tf.Tensor:
    """How many float values of `batch` (any nest of tensors, ragged ones too) are NaN or infinite."""
    counts = [tf.reduce_sum(tf.cast(~tf.math.is_finite(t), tf.float32))
              for t in tf.nest.flatten(batch, expand_composites=True) if t.dtype.is_floating]
    return tf.add_n(counts) if counts else tf.constant(0.0)


def _divergence_cause(bad_inputs: int, *, first_step: bool) -> str:
    """What a divergence message blames: the data when the batch held NaN or infinity, not the
    learning rate when no update had happened yet, else the learning rate or the data."""
    if bad_inputs:
        return (f"the batch held {bad_inputs} NaN or infinite values: check the data (e.g. the transfer set's "
                "teacher logits)")
    if first_step:
        return ("the loss was not finite at this run's first step, before any update, so the learning rate is not "
                "the cause: check the data (e.g. extreme teacher logits) and the loss settings")
    return f"lower {field('learning_rate')} or check the data"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a job's run does, and what `runner.prepare_run` checks and records of it (from
    `Task.validate`): the data files, the model config, the other inputs ({field: path}),
    anything `extra`, the settings not compared on resume; then whether it trains (else it uses
    a trained run folder), evaluates on dev (`eval_results.txt`), predicts the test set
    (`test_results.tsv`) and exports (`<output_dir>/export` and the INT8 gate, on the chief)."""

    data_files: Sequence[str | None] = ()
    model_config: Mapping | None = None
    inputs: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    extra: Mapping | None = None
    ignore_settings: Sequence[str] = ()
    train: bool = True
    evaluate: bool = False
    predict: bool = False
    export: bool = False


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How one stage trains: in `output_dir` (its checkpoints, TensorBoard, best model), for
    `num_train_epochs` at `learning_rate` (None: the `TrainConfig`'s), warm-up and decay or a
    constant rate, per-variable rate factors, and whether dev is evaluated after every epoch."""

    output_dir: str
    num_train_epochs: float | None = None
    learning_rate: float | None = None
    constant_learning_rate: bool = False
    lr_multipliers: Mapping[str, float] | None = None
    evaluate: bool = True


class Task:
    """One training job, as TF Model Garden's Task: its inputs, its model and where it starts
    from, its loss terms and metrics, and its export. `runner.run` drives it; the trainer needs
    only the step.

    The step (`Trainer`): `models` (the Keras models whose weights train or are read:
    checkpointed, and their dropout states restored on resume), `eval_model` (inputs -> logits;
    None when the task has no dev evaluation) and `loss_terms`.

    The job (`runner.run`, in this order): `check` (before any TensorFlow op), `validate` (every
    input read and checked, no model trained yet; the `RunPlan`), `prepare` (once the run folder is
    ready), `build_model` and `initialize` (in the strategy's scope), then each of `stages` trains
    (`schedule`, `build_inputs("train", epoch)`, `steps_per_epoch`; a stage of a multi-stage job
    builds and initializes its own models first, and `finish_stage` after), `trained_step`,
    `evaluate` on `build_inputs("dev")`, predictions on `build_inputs("test")`, `export`.
    """

    models: Mapping[str, keras.Model]
    eval_model: keras.Model | None = None
    config = None  # the job's config (`bertdistill.configs`): `run`, `train`, `export`, ...
    dry_run: bool = False  # the run writes nothing (its run folder is not locked)

    def loss_terms(self, x, y) -> dict[str, tf.Tensor]:
        """The weighted loss terms of one (local) batch, in training mode; the loss is their sum.

        A term is a float32 vector [B] (one value per example) or a scalar mean over the batch.
        """
        raise NotImplementedError

    @property
    def trainable_variables(self) -> list:
        return [v for model in self.models.values() for v in model.trainable_variables]

    # The job

    @property
    def precision(self) -> str:
        """The Keras dtype policy the models are built under."""
        return self.config.run.mixed_precision

    def check(self) -> None:
        """Checks that need no TensorFlow, before the strategy exists (multi-worker collectives
        must be set up before the first TensorFlow op)."""

    def validate(self) -> RunPlan | None:
        """Reads and checks every input before any model is trained or anything written (a
        frozen teacher may be loaded); returns the plan, or None when there is nothing to run."""
        raise NotImplementedError

    def prepare(self, status: str) -> None:
        """What depends on the run folder (`prepare_run`'s `status`: only a "resumed" run may
        reuse what the folder holds)."""

    def build_model(self) -> None:
        """Builds `models` and `eval_model` (called in the strategy's scope)."""
        raise NotImplementedError

    def initialize(self) -> None:
        """The models' start: pretrained weights, teacher layers (in the strategy's scope for a
        job, after it for a stage)."""

    def stages(self) -> Sequence[Task]:
        """What trains, in order: the task itself, or the stages of a multi-stage job."""
        return [self]

    def schedule(self) -> Schedule:
        """How this stage trains."""
        return Schedule(output_dir=self.config.run.output_dir)

    def build_inputs(self, split: str, *, epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        """`(x, y)` batches of `split`: "train" (shuffled with the seed of `epoch`), "dev" or
        "test" (in order; `batch_size` default: the config's eval or predict batch size)."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """Training batches per epoch."""
        raise NotImplementedError

    def finish_stage(self, chief: bool) -> None:
        """After this stage trained: what it leaves for the next (written on the chief)."""

    def trained_step(self) -> int:
        """The global step of the model evaluated and exported: without training, restores the
        trained model first."""
        return 0

    def num_examples(self, split: str) -> int:
        """How many examples `build_inputs(split)` holds."""
        raise NotImplementedError

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        """The metrics of `eval_model` on labelled batches: accuracy and mean cross-entropy."""
        return evaluate(self.eval_model, dataset)

    def dev_examples(self) -> Sequence:
        """The dev `InputExample`s (raw texts), for the INT8 gate of the export."""
        raise NotImplementedError

    def export(self, folder: str, sample: dict[str, np.ndarray]) -> None:
        """Writes the export folder (`sample`: a batch of inputs for the parity checks)."""
        raise NotImplementedError


class ClassifierTask(Task):
    """Cross-entropy of a classifier's logits against the label ids (`y`)."""

    def __init__(self, model: keras.Model):
        self.models = {"model": model}
        self.eval_model = model

    def loss_terms(self, x, y):
        logits = tf.cast(self.eval_model(x, training=True), tf.float32)
        return {"cross_entropy": keras.losses.sparse_categorical_crossentropy(_labels(y), logits, from_logits=True)}


def _labels(y):
    return y["label_ids"] if isinstance(y, dict) else y


def _batch_size(x) -> tf.Tensor:
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _inference(model: keras.Model):
    """A traced float32 forward pass of `model` in inference mode, for batches of any shape."""
    return tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), reduce_retracing=True)


def predict_logits(model: keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    """float32 outputs of `model` (training=False) over `dataset`'s `(x, y)` batches, in order."""
    forward = _inference(model)
    outputs = [forward(x).numpy() for x, _ in dataset]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def evaluate(model: keras.Model, dataset: tf.data.Dataset) -> dict[str, float]:
    """Accuracy (a fraction, `bertdistill.metrics.accuracy`) and mean cross-entropy of a classifier
    on labelled `(x, y)` batches.

    Runs on this worker alone (no collective), so every worker computes the same numbers.
    """
    forward = _inference(model)
    predicted, gold = [], []
    loss = 0.0
    for x, y in dataset:
        labels = _labels(y).numpy()
        logits = forward(x).numpy().astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        loss -= float(log_probs[np.arange(len(labels)), labels].sum())
        predicted.append(logits.argmax(-1))
        gold.append(labels)
    total = sum(map(len, gold))
    if not total:
        raise ValueError("the evaluation dataset is empty")
    return {"accuracy": accuracy(np.concatenate(predicted), np.concatenate(gold)), "loss": loss / total}


def write_hparams(log_dir: str, hparams: Mapping[str, object]) -> None:
    """Records the run's hyperparameters for TensorBoard's hparams dashboard."""
    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    with tf.summary.create_file_writer(log_dir).as_default():
        hparams_api.hparams(values)


def read_best(output_dir: str) -> dict | None:
    """`<output_dir>/best/metrics.json` (val_accuracy, val_loss, 0-based epoch, global_step), if any."""
    path = os.path.join(output_dir, "best", "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _optimizer_state(model: keras.Model) -> list | None:
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if optimizer is not None else None


def save_model_weights(model: keras.Model, path: str) -> None:
    """Writes `model`'s weights (no optimizer state) to a `.weights.h5` file, atomically."""
    with atomic_path(path) as tmp:
        keras.saving.save_weights(model, tmp, objects_to_skip=_optimizer_state(model))


def _weight_shapes(path: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: shapes.update({name: item.shape}) if isinstance(item, h5py.Dataset)
                         else None)
    except OSError as e:
        raise UserError(f"{path} is not a Keras weights file: {e}") from None
    return shapes


def weights_file_difference(model: keras.Model, path: str) -> str | None:
    """How the `.weights.h5` file `path` differs from `model`'s weights (names and shapes), or
    None when it fits (Keras loads a file holding more layers than the model without a word);
    a file that is no HDF5 file is a `UserError`."""
    with tempfile.TemporaryDirectory() as folder:
        own = os.path.join(folder, "model.weights.h5")
        save_model_weights(model, own)
        expected, found = _weight_shapes(own), _weight_shapes(path)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing:
        return f"{len(missing)} of the model's weights are not in it, e.g. {missing[0]}"
    if extra:
        return f"it holds {len(extra)} weights the model has not, e.g. {extra[0]}"
    for name, shape in expected.items():
        if found[name] != shape:
            return f"{name} is {found[name]} in it, {shape} in the model"
    return None


def restore_best_weights(model: keras.Model, output_dir: str) -> bool:
    """Loads `<output_dir>/best/model.weights.h5` into `model`, if a best model was kept."""
    if read_best(output_dir) is None:
        return False
    model.load_weights(os.path.join(output_dir, "best", "model.weights.h5"),
                       objects_to_skip=_optimizer_state(model))
    return True


def restore_from_checkpoint(model: keras.Model, checkpoint_dir: str, name: str = "model") -> int | None:
    """Loads `model`'s weights from the latest checkpoint a `Trainer` wrote in `checkpoint_dir`
    (where the task called it `name`); returns that checkpoint's step, or None when there is none."""
    path = tf.train.latest_checkpoint(checkpoint_dir)
    if not path:
        return None
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(step=step, **{name: list(model.weights)}).restore(path).expect_partial() \
        .assert_existing_objects_matched()
    return int(step.numpy())


def _random_states(models: Sequence[keras.Model]) -> list:
    """The random-generator states of the models' layers (dropout), which `weights` leave out."""
    states = []
    for model in models:
        weights = {id(w) for w in model.weights}
        states += [v for v in model.variables if id(v) not in weights]
    return states


class _Progress:
    """A Keras Progbar on a terminal; otherwise a log line every `every` steps."""

    def __init__(self, total: int, every: int, start: int, batch_size_hint: int | None = None):
        self.total, self.every, self.start = total, every, start
        self.began = time.monotonic()
        self.bar = keras.utils.Progbar(total, stateful_metrics=["loss", "examples/s"]) if sys.stdout.isatty() else None
        if self.bar:
            self.bar.update(start)

    def update(self, step: int, loss: float, examples_per_second: float) -> None:
        if self.bar:
            self.bar.update(step, [("loss", loss), ("examples/s", examples_per_second)])
        elif step % self.every == 0 or step == self.total:
            elapsed = time.monotonic() - self.began
            eta = elapsed / max(step - self.start, 1) * (self.total - step)
            logging.info("step %d/%d  loss %.4f  %.1f examples/s  ETA %s", step, self.total, loss,
                         examples_per_second, time.strftime("%H:%M:%S", time.gmtime(eta)))


class Trainer:
    """Trains a `Task` with an optimizer from `optimization.create_optimizer`; see the module docstring.

    Build the task's models and the optimizer inside `strategy.scope()` before creating it.
    `extra_checkpoint_items` are further trackables to save and restore with the run.
    """

    def __init__(self, task: Task, optimizer: keras.optimizers.Optimizer, *, strategy: tf.distribute.Strategy,
                 output_dir: str, max_grad_norm: float = 1.0, save_checkpoints_steps: int = 1000,
                 log_every_steps: int = 100, use_xla: bool = False, max_checkpoints_to_keep: int = 3,
                 extra_checkpoint_items: Mapping[str, object] | None = None):
        self.task, self.optimizer, self.strategy = task, optimizer, strategy
        self.output_dir, self.max_grad_norm = output_dir, max_grad_norm
        self.save_checkpoints_steps, self.log_every_steps, self.use_xla = save_checkpoints_steps, log_every_steps, use_xla
        self.chief = is_chief(strategy)
        self.loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.variables = task.trainable_variables
        with strategy.scope():
            if not optimizer.built:
                optimizer.build(self.variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint_dir = os.path.join(output_dir, "checkpoints")
        self._write_dir = self.checkpoint_dir if self.chief else tempfile.mkdtemp(prefix="worker_checkpoints_")
        # Keras 3 models are not tracked by tf.train.Checkpoint as objects: save their weights as lists.
        checkpoint = tf.train.Checkpoint(optimizer=optimizer, step=self.step,
                                         random_states=_random_states(list(task.models.values())),
                                         **{name: list(model.weights) for name, model in task.models.items()},
                                         **(extra_checkpoint_items or {}))
        self.manager = tf.train.CheckpointManager(checkpoint, self._write_dir, max_to_keep=max_checkpoints_to_keep)
        self._kill_at_step = _test_kill_at_step()
        # train_step(iterator): one distributed step on next(iterator) -> (mean terms, grad norm, examples,
        # NaN or infinite input values).
        self.train_step = self._make_train_step()
        self._writers = {}

    # The step

    def _make_train_step(self) -> Callable:
        task, optimizer, variables = self.task, self.optimizer, self.variables

        def local_sums(x, y):
            """Per-replica: sums over the local examples of each term and of the loss, and gradients."""
            local = tf.cast(_batch_size(x), tf.float32)
            with tf.GradientTape() as tape:
                terms = task.loss_terms(x, y)
                sums = {name: tf.reduce_sum(tf.cast(value, tf.float32)) if value.shape.rank
                        else tf.cast(value, tf.float32) * local for name, value in terms.items()}
                loss = tf.add_n(list(sums.values()))
                scaled = optimizer.scale_loss(loss) if self.loss_scaling else loss
            return sums, tape.gradient(scaled, variables), local

        if self.use_xla:
            local_sums = tf.function(local_sums, jit_compile=True)

        def replica_step(x, y):
            sums, grads, local = local_sums(x, y)
            present = [i for i, g in enumerate(grads) if g is not None]
            context = tf.distribute.get_replica_context()
            sums, reduced, count, bad_inputs = context.all_reduce(
                tf.distribute.ReduceOp.SUM, (sums, [grads[i] for i in present], local, _non_finite_count((x, y))))
            count = tf.maximum(count, 1.0)
            grads = [g / count for g in reduced]
            terms = {name: value / count for name, value in sums.items()}
            scale = optimizer.scale_loss(tf.constant(1.0)) if self.loss_scaling else tf.constant(1.0)
            norm = tf.linalg.global_norm(grads) / scale
            if self.max_grad_norm:
                # A NaN/Inf norm makes NaN gradients: the loss-scale optimizer skips such a step; without loss
                # scaling the loop stops right after it (`TrainingDiverged`), before anything is saved.
                factor = tf.minimum(1.0, self.max_grad_norm / norm)
                grads = [g * factor for g in grads]
            optimizer.apply(grads, [variables[i] for i in present])
            return terms, norm, count, bad_inputs

        @tf.function
        def train_step(iterator):
            x, y = next(iterator)
            terms, norm, count, bad_inputs = self.strategy.run(replica_step, args=(x, y))
            local = self.strategy.experimental_local_results
            return local(terms)[0], local(norm)[0], local(count)[0], local(bad_inputs)[0]

        return train_step

    # Checkpoints

    def restore(self) -> int:
        """Restores the latest checkpoint (the chief's), if any; returns the steps done."""
        path = tf.train.latest_checkpoint(self.checkpoint_dir)
        if path:
            self.manager.checkpoint.restore(path).assert_existing_objects_matched()
            logging.info("Resumed from %s", path)
        return int(self.step.numpy())

    def _save(self, step: int) -> None:
        """Saves the checkpoint of `step`. A failed write (a full disk) leaves none of it behind
        (TensorFlow's `ckpt-<step>_temp` included) and is a `UserError` naming where the next run
        resumes."""
        try:
            self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as e:
            partial = os.path.join(self._write_dir, f"ckpt-{step}")
            for path in tf.io.gfile.glob(partial + "_temp*") + tf.io.gfile.glob(partial + ".*"):
                (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
            latest = tf.train.latest_checkpoint(self._write_dir)
            reason = e.strerror if isinstance(e, OSError) and e.strerror else getattr(e, "message", str(e))
            raise UserError(f"could not write the checkpoint of step {step} in {self._write_dir} ({reason}); free "
                            "disk space and run the same command again: it resumes from "
                            f"{latest or 'the start'}") from None
        if self._kill_at_step is not None and step >= self._kill_at_step:  # test-only (module docstring)
            os.kill(os.getpid(), signal.SIGKILL)

    # Summaries

    def _writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.output_dir, "tensorboard", name))
        return self._writers[name]

    def _summaries(self, name: str, step: int, values: Mapping[str, float]) -> None:
        if not self.chief:
            return
        with self._writer(name).as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)
        self._writer(name).flush()

    def _learning_rate(self) -> float:
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(optimizer.learning_rate.numpy() if hasattr(optimizer.learning_rate, "numpy")
                     else optimizer.learning_rate)

    # Dev selection

    def _keep_if_best(self, best: dict | None, metrics: dict, epoch: int, step: int) -> dict | None:
        if best is not None and metrics["accuracy"] <= best["val_accuracy"]:
            return best
        best = {"val_accuracy": metrics["accuracy"], "val_loss": metrics["loss"], "epoch": epoch, "global_step": step}
        if self.chief:
            folder = os.path.join(self.output_dir, "best")
            os.makedirs(folder, exist_ok=True)
            save_model_weights(self.task.eval_model, os.path.join(folder, "model.weights.h5"))
            with atomic_output(os.path.join(folder, "metrics.json")) as f:
                json.dump(best, f, indent=2)
        return best

    # The loop

    def fit(self, train_dataset_fn: Callable[[int], tf.data.Dataset], *, num_train_steps: int, steps_per_epoch: int,
            eval_dataset: tf.data.Dataset | None = None, early_stopping_patience: int = 0,
            hparams: Mapping[str, object] | None = None) -> list[dict]:
        """Trains for `num_train_steps` batches (resuming), evaluating after every epoch.

        Returns one dict per epoch finished by this call: `epoch`, `step`, the mean loss terms and
        `loss` over its steps, and `val_accuracy`/`val_loss` when evaluated.
        """
        if num_train_steps <= 0 or steps_per_epoch <= 0:
            raise ValueError(f"num_train_steps and steps_per_epoch must be positive; "
                             f"got {num_train_steps} and {steps_per_epoch}")
        if early_stopping_patience and (eval_dataset is None or self.task.eval_model is None):
            raise ValueError("early stopping needs an eval_dataset and a task with an eval_model")
        done = self.restore()
        if self.chief and hparams is not None and done == 0:
            write_hparams(os.path.join(self.output_dir, "tensorboard"), hparams)
        best = read_best(self.output_dir) if done and eval_dataset is not None else None
        history: list[dict] = []
        progress = _Progress(num_train_steps, self.log_every_steps, done)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        try:
            while done < num_train_steps:
                if (early_stopping_patience and best
                        and done // steps_per_epoch - 1 - best["epoch"] >= early_stopping_patience):
                    logging.info("Stopped early at step %d: no better dev accuracy in %d epochs", done,
                                 early_stopping_patience)
                    break
                epoch, offset = divmod(done, steps_per_epoch)
                steps = min(steps_per_epoch, num_train_steps - epoch * steps_per_epoch) - offset
                dataset = train_dataset_fn(epoch).skip(offset).repeat().with_options(options)
                iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
                logs = self._run_epoch(iterator, done, steps, progress)
                done += steps
                logging.info("epoch %d (step %d): %s", epoch, done, ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
                logs.update(epoch=epoch, step=done)
                if eval_dataset is not None and self.task.eval_model is not None:
                    metrics = self.task.evaluate(eval_dataset)
                    logs.update(val_accuracy=metrics["accuracy"], val_loss=metrics["loss"])
                    self._summaries("validation", done, metrics)
                    best = self._keep_if_best(best, metrics, epoch, done)
                    logging.info("epoch %d (step %d): dev accuracy %.4f, dev loss %.4f", epoch, done,
                                 metrics["accuracy"], metrics["loss"])
                history.append(logs)
        finally:
            if not self.chief:
                shutil.rmtree(self._write_dir, ignore_errors=True)
        return history

    def _run_epoch(self, iterator, done: int, steps: int, progress: _Progress) -> dict:
        totals: dict[str, float] = {}
        window: dict[str, float] = {}
        window_steps, window_examples, window_start = 0, 0.0, time.monotonic()
        saved = done
        for i in range(steps):
            terms, norm, count, bad_inputs = self.train_step(iterator)
            step = done + i + 1
            terms = {name: float(value) for name, value in terms.items()}
            loss, norm = sum(terms.values()), float(norm)
            if not math.isfinite(loss) or (not self.loss_scaling and not math.isfinite(norm)):
                latest = tf.train.latest_checkpoint(self.checkpoint_dir)
                raise TrainingDiverged(
                    f"training diverged at step {step}: loss {loss}, gradient norm {norm}; the last good "
                    f"checkpoint is {latest or 'none'} and nothing was exported; "
                    + _divergence_cause(int(bad_inputs), first_step=i == 0))
            self.step.assign(step)
            for name, value in {**terms, "loss": loss}.items():
                totals[name] = totals.get(name, 0.0) + value
                window[name] = window.get(name, 0.0) + value
            window_steps += 1
            window_examples += float(count)
            rate = window_examples / max(time.monotonic() - window_start, 1e-9)
            progress.update(step, loss, rate)
            if step % self.log_every_steps == 0 or i == steps - 1:  # and at the end of every epoch and run
                self._summaries("train", step, {**{k: v / window_steps for k, v in window.items()},
                                                "learning_rate": self._learning_rate(), "grad_norm": norm,
                                                "examples_per_second": rate})
                window, window_steps, window_examples, window_start = {}, 0, 0.0, time.monotonic()
            if step % self.save_checkpoints_steps == 0:
                self._save(step)
                saved = step
        if saved != done + steps:
            self._save(done + steps)
        return {name: value / steps for name, value in totals.items()}
