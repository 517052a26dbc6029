"""Training utilities shared by every entry point: run_classifier-named flags, distribution
strategy and precision policy from strings, AdamW with warm-up/decay and layer-wise learning
rates, and `run_training`, a resumable `Model.fit` with checkpoints, TensorBoard, dev-set model
selection and early stopping.

Order of calls in an entry point::

    strategy = get_distribution_strategy(FLAGS.distribution_strategy, FLAGS.tpu)  # before any op
    set_precision_policy(FLAGS.mixed_precision)                                  # before any model
    with strategy.scope():
        model = ...
        compile_classifier(model, create_optimizer(...), use_xla=FLAGS.use_xla)
    run_training(model, lambda epoch: make_dataset(..., seed=FLAGS.seed + epoch), ...)

Resume design. A checkpoint holds the model, the optimizer (slots, `iterations`, and the loss
scale under mixed_float16) and `step`, the number of training batches consumed (it can exceed
`optimizer.iterations`: the loss-scale optimizer skips steps whose gradients overflow). Training
is a sequence of real epochs of `steps_per_epoch` batches, and `run_training` calls `fit` once
per epoch (`initial_epoch=e, epochs=e + 1`) on a fresh `train_dataset_fn(e)`, skipping the
batches of that epoch already done. So a restarted run with the same arguments restores the
latest checkpoint, finishes the interrupted epoch from the next unseen batch and carries on: no
step is redone, no batch is seen twice, and the result equals an uninterrupted run's.
`train_dataset_fn(epoch)` must give the same batches whenever it is called with the same epoch
(seed the shuffle with the epoch). A fresh dataset object per epoch, rather than one repeated
dataset, is what makes this exact: a seeded `shuffle(reshuffle_each_iteration=True)` draws a new
order for every iterator made over the same object, and under a distribution strategy Keras
makes an extra iterator at the start of each `fit` (to build the model symbolically), so the
order of a repeated dataset would depend on where the run started. The train function is traced
once per model, not once per `fit`.

Each epoch ends with an evaluation on the dev set (when given); the best-by-dev-accuracy weights
go to `<output_dir>/best/` (`model.weights.h5`, `metrics.json`); training stops early after
`early_stopping_patience` epochs without a strictly better dev accuracy (Keras `EarlyStopping`
semantics, decided from `metrics.json` so that it survives restarts). TensorBoard logs go to
`<output_dir>/tensorboard`: Keras' epoch summaries in `train/` and `validation/`, plus in
`train/` the running training metrics (`batch_*`) and `learning_rate` every `log_every_steps`
steps at the global step, and the hyperparameters for the hparams dashboard.

Multi-worker: only the chief writes `best/` and TensorBoard; every worker saves checkpoints
(saving is collective), the others into a temporary folder, and all restore from the chief's
(shared file system). Keras 3.15 `Model.fit` itself fails with two or more workers; see
`get_distribution_strategy`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping

import keras
import tensorflow as tf
from absl import flags, logging
from tensorboard.plugins.hparams import api as hparams_api

PACKAGE = "bertdistill"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
# Matched against variable paths, e.g. `layer_0/attention_LayerNorm/gamma`, `classifier/bias`.
NO_WEIGHT_DECAY = re.compile(r"LayerNorm|layer_norm|(?:^|/)bias$")
_LAYER = re.compile(r"(?:^|/)layer_(\d+)/")
_EMBEDDINGS = re.compile(r"(?:^|/)embeddings/")


def define_common_flags(flag_values: flags.FlagValues = flags.FLAGS, *, bert: bool = True) -> None:
    """Defines Google run_classifier.py's flags and ours, all optional; safe to call twice.

    `bert=False` leaves out what only a BERT model uses (`--do_train/--do_eval/--do_predict`,
    `--vocab_file`, `--bert_config_file`, `--init_checkpoint`, `--layerwise_lr_decay`).
    """
    if "mixed_precision" in flag_values:
        return
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("task_name", "sst-2", "Task (data processor) name.", **fv)
    flags.DEFINE_string("data_dir", None, "Folder with the task's train/dev/test files (SST-2: tfds when unset).",
                       **fv)
    if bert:
        flags.DEFINE_bool("do_train", False, "Train.", **fv)
        flags.DEFINE_bool("do_eval", False, "Evaluate on the dev set.", **fv)
        flags.DEFINE_bool("do_predict", False, "Predict the test set.", **fv)
        flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt (default: the checkpoint's).", **fv)
        flags.DEFINE_string("bert_config_file", None, "bert_config.json of the pre-trained model.", **fv)
        flags.DEFINE_string("init_checkpoint", None, "Google TF checkpoint prefix, Hugging Face folder or export "
                           "folder (default: offline model).", **fv)
        flags.DEFINE_float("layerwise_lr_decay", 1.0, "LR factor per layer below the top (1.0: off).", **fv)
    flags.DEFINE_bool("do_lower_case", True, "Lower-case the input (uncased models).", **fv)
    flags.DEFINE_integer("max_seq_length", 128, "Maximum tokens per example (after tokenization).", **fv)
    flags.DEFINE_integer("train_batch_size", 32, "Training batch size (global).", **fv)
    flags.DEFINE_integer("eval_batch_size", 8, "Evaluation batch size.", **fv)
    flags.DEFINE_integer("predict_batch_size", 8, "Prediction batch size.", **fv)
    flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of AdamW.", **fv)
    flags.DEFINE_float("num_train_epochs", 3.0, "Training epochs (may be fractional).", **fv)
    flags.DEFINE_float("warmup_proportion", 0.1, "Share of training steps with linear warm-up.", **fv)
    flags.DEFINE_integer("save_checkpoints_steps", 1000, "Steps between checkpoints (also at each epoch end).",
                         **fv)
    flags.DEFINE_string("output_dir", None, "Checkpoints, TensorBoard logs, results and exports.", **fv)
    flags.DEFINE_enum("mixed_precision", "float32", PRECISIONS,
                      "Precision policy: mixed_bfloat16 on CPU/TPU, mixed_float16 on GPU.", **fv)
    flags.DEFINE_enum("distribution_strategy", "off", STRATEGIES, "tf.distribute strategy.", **fv)
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --distribution_strategy=tpu.", **fv)
    flags.DEFINE_bool("use_xla", False, "Compile the train step with XLA (best with fixed shapes).", **fv)
    flags.DEFINE_integer("seed", 12345, "Random seed: initialisation, dropout, data order.", **fv)
    flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not on LayerNorm or biases).", **fv)
    flags.DEFINE_float("max_grad_norm", 1.0, "Clip gradients to this global norm (0: off).", **fv)
    flags.DEFINE_integer("early_stopping_patience", 0,
                         "Epochs without a better dev accuracy before stopping (0: off).", **fv)


def get_distribution_strategy(name: str, tpu_address: str | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named by `--distribution_strategy`; call before any other TF op.

    `mirrored` uses every GPU, or every logical CPU when there is none; `multi_worker_mirrored`
    reads the cluster from `TF_CONFIG`.

    Known limitation (Keras 3.15.1, TF 2.21): `Model.fit` under `MultiWorkerMirroredStrategy`
    with two or more workers fails inside Keras' TF trainer (keras/src/backend/tensorflow/
    trainer.py). `_maybe_symbolic_build` passes the whole (x, y) batch to `strategy.reduce`,
    whose collective implementation does not accept a nest ("Attempt to convert a value
    ({'input_ids': PerReplica...}) with an unsupported type (<class 'dict'>) to a Tensor";
    keras-team/keras#20329, #20585), and `reduce_per_replica` reduces the scalar step logs with
    `strategy.reduce("MEAN", v, axis=0)` ("Invalid reduction dimension 0 for input with 0
    dimensions"; tensorflow/tensorflow#72388). One worker, and `mirrored`, work.
    """
    if name == "off":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker_mirrored":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        spec = strategy.cluster_resolver.cluster_spec()
        if sum(spec.num_tasks(job) for job in spec.jobs) > 1:
            logging.warning("Keras 3 Model.fit fails with several MultiWorkerMirroredStrategy workers "
                            "(keras-team/keras#20585, tensorflow/tensorflow#72388)")
        return strategy
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown distribution strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker writes the run's outputs (always true outside multi-worker training)."""
    return strategy.extended.should_checkpoint


def set_precision_policy(name: str) -> None:
    """Sets Keras' global dtype policy (`--mixed_precision`); call before any model is built."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision policy {name!r}; expected one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(name)


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """`set_precision_policy(name)` for a `with` block (tests), then back to the previous policy."""
    previous = keras.mixed_precision.global_policy().name
    set_precision_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need total_steps > 0 and 0 <= warmup_steps <= total_steps; "
                             f"got total_steps={total_steps}, warmup_steps={warmup_steps}")
        self.peak, self.total_steps, self.warmup_steps = peak, total_steps, warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * keras.ops.clip(keras.ops.where(step < self.warmup_steps, warmup, decay), 0.0, 1.0)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def layerwise_lr_multipliers(variables: Iterable[keras.Variable | str], num_layers: int | None,
                             decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay factors by variable path, for BERT's naming.

    With `num_layers` L (None: one more than the largest layer index found), a variable under
    `layer_i/` (`layer_0` is the bottom) gets `decay ** (L - i)`, one under `embeddings/`
    `decay ** (L + 1)`; anything else (pooler, classifier) keeps 1.0 and is left out.
    """
    paths = [v if isinstance(v, str) else v.path for v in variables]
    layers = {path: int(m.group(1)) for path in paths if (m := _LAYER.search(path))}
    if not layers:
        raise ValueError("layer-wise learning-rate decay needs variables under `layer_<i>/`; none found")
    num_layers = max(layers.values()) + 1 if num_layers is None else num_layers
    if max(layers.values()) >= num_layers:
        raise ValueError(f"variable {max(layers, key=layers.get)} is beyond num_layers={num_layers}")
    multipliers = {path: decay ** (num_layers + 1) for path in paths if _EMBEDDINGS.search(path)}
    multipliers.update({path: decay ** (num_layers - i) for path, i in layers.items()})
    return multipliers


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdamWeightDecay(keras.optimizers.AdamW):
    """Keras AdamW with BERT's weight-decay exclusions and per-variable learning rates, both by path.

    Weight decay skips variables whose path matches `NO_WEIGHT_DECAY` (LayerNorm weights, biases),
    through Keras' `exclude_from_weight_decay`. The learning rate of a variable is multiplied by
    `lr_multipliers[path]` (default 1.0) or, when `layerwise_lr_decay != 1`, by
    `layerwise_lr_multipliers(variables, None, layerwise_lr_decay)`. Adam is invariant to the
    scale of the gradients, so the factor scales the Adam step itself; Keras applies the
    decoupled weight decay separately, at the schedule's rate.
    """

    def __init__(self, *, layerwise_lr_decay: float = 1.0, lr_multipliers: Mapping[str, float] | None = None,
                 **kwargs):
        if lr_multipliers is not None and layerwise_lr_decay != 1.0:
            raise ValueError("give lr_multipliers or layerwise_lr_decay, not both")
        super().__init__(**kwargs)
        self.layerwise_lr_decay = layerwise_lr_decay
        self.lr_multipliers = None if lr_multipliers is None else dict(lr_multipliers)

    def build(self, variables):
        self.exclude_from_weight_decay(var_list=[v for v in variables if NO_WEIGHT_DECAY.search(v.path)])
        multipliers = self.lr_multipliers or {}
        if self.layerwise_lr_decay != 1.0:
            multipliers = layerwise_lr_multipliers(variables, None, self.layerwise_lr_decay)
        self._lr_scales = [multipliers.get(v.path, 1.0) for v in variables]
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate if scale == 1.0 else learning_rate * scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "layerwise_lr_decay": self.layerwise_lr_decay,
                "lr_multipliers": self.lr_multipliers}


def create_optimizer(*, learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                     weight_decay: float = 0.01, max_grad_norm: float | None = 1.0, layerwise_lr_decay: float = 1.0,
                     lr_multipliers: Mapping[str, float] | None = None) -> keras.optimizers.Optimizer:
    """BERT's optimizer: AdamW (epsilon 1e-6), linear warm-up then linear decay to 0, global-norm
    clipping (`max_grad_norm`; 0 or None: off), no weight decay on LayerNorm weights and biases,
    optional layer-wise or per-variable learning rates (see `AdamWeightDecay`).

    Create it inside `strategy.scope()`. Do not wrap it for loss scaling: under mixed_float16,
    `compile` does.
    """
    return AdamWeightDecay(learning_rate=WarmupLinearDecay(learning_rate, num_train_steps, num_warmup_steps),
                           weight_decay=weight_decay, epsilon=1e-6, global_clipnorm=max_grad_norm or None,
                           layerwise_lr_decay=layerwise_lr_decay, lr_multipliers=lr_multipliers)


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer | str, *,
                       use_xla: bool = False) -> None:
    """Sparse categorical cross-entropy on logits and an `accuracy` metric; XLA when `use_xla`."""
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=use_xla)


def checkpoint_manager(model: keras.Model, directory: str, *, max_to_keep: int = 3) -> tf.train.CheckpointManager:
    """A manager of `tf.train.Checkpoint(model, optimizer, step)` for a compiled model.

    Builds the optimizer (in the model's strategy) so that its variables exist to restore into.
    `manager.checkpoint.step` (int64) counts the training batches consumed.
    """
    if not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)


def restore_latest(manager: tf.train.CheckpointManager, directory: str | None = None) -> int:
    """Restores the latest checkpoint in `directory` (default: the manager's), if any; returns the steps done."""
    path = tf.train.latest_checkpoint(directory or manager.directory)
    if path:
        manager.checkpoint.restore(path).assert_existing_objects_matched()
        logging.info("Resumed from %s", path)
    return int(manager.checkpoint.step.numpy())


class StepCheckpoint(keras.callbacks.Callback):
    """Advances `manager.checkpoint.step` with every training batch; saves a checkpoint every
    `save_every` steps (0: not within epochs) and at the end of every `fit`."""

    def __init__(self, manager: tf.train.CheckpointManager, save_every: int):
        super().__init__()
        self.manager, self.save_every = manager, save_every
        self.step = manager.checkpoint.step
        self._epoch_start = self._saved = int(self.step.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = int(self.step.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start + batch + 1
        self.step.assign(step)
        if self.save_every and step % self.save_every == 0:
            self._save(step)

    def on_train_end(self, logs=None):
        if int(self.step.numpy()) != self._saved:
            self._save(int(self.step.numpy()))

    def _save(self, step: int) -> None:
        self.manager.save(checkpoint_number=step)
        self._saved = step


class _StepSummaries(keras.callbacks.Callback):
    """Every `every` steps: the running training metrics and the learning rate, at the global step."""

    def __init__(self, log_dir: str, step: tf.Variable, every: int):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        self.step, self.every = step, every

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step.numpy())
        if step % self.every:
            return
        with self.writer.as_default(step=step):
            for name, value in (logs or {}).items():
                tf.summary.scalar(f"batch_{name}", value)
            tf.summary.scalar("learning_rate", self.model.optimizer.learning_rate)
        self.writer.flush()


def write_hparams(log_dir: str, hparams: Mapping[str, object]) -> None:
    """Records the run's hyperparameters for TensorBoard's hparams dashboard."""
    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    with tf.summary.create_file_writer(log_dir).as_default():
        hparams_api.hparams(values)


def read_best(output_dir: str) -> dict | None:
    """`<output_dir>/best/metrics.json` (val_accuracy, val_loss, 0-based epoch, global_step: training
    steps done), if a best model was kept."""
    path = os.path.join(output_dir, "best", "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _optimizer_state(model: keras.Model) -> list | None:
    """What to skip so that a weights file holds the model alone (uncompiled models have none)."""
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if optimizer is not None else None


def save_model_weights(model: keras.Model, path: str) -> None:
    """Writes `model`'s weights (no optimizer state) to a `.weights.h5` file."""
    keras.saving.save_weights(model, path, objects_to_skip=_optimizer_state(model))


def restore_best_weights(model: keras.Model, output_dir: str) -> bool:
    """Loads `<output_dir>/best/model.weights.h5` (model weights, no optimizer state) into `model`,
    if a best model was kept."""
    if read_best(output_dir) is None:
        return False
    model.load_weights(os.path.join(output_dir, "best", "model.weights.h5"),
                       objects_to_skip=_optimizer_state(model))
    return True


class _DevSelection(keras.callbacks.Callback):
    """At each epoch end, keeps the best-by-`val_accuracy` weights; knows when to stop early."""

    def __init__(self, output_dir: str, step: tf.Variable, patience: int, best: dict | None, write: bool):
        super().__init__()
        self.folder = os.path.join(output_dir, "best")
        self.step, self.patience, self.best, self.write = step, patience, best, write

    def should_stop(self, last_epoch: int) -> bool:
        """Whether the epochs up to `last_epoch` (0-based) ran `patience` epochs past the best one."""
        return bool(self.patience and self.best and last_epoch - self.best["epoch"] >= self.patience)

    def on_epoch_end(self, epoch, logs=None):
        accuracy = float(logs["val_accuracy"])
        if self.best is not None and accuracy <= self.best["val_accuracy"]:
            return
        self.best = {"val_accuracy": accuracy, "val_loss": float(logs["val_loss"]), "epoch": epoch,
                     "global_step": int(self.step.numpy())}
        if self.write:
            os.makedirs(self.folder, exist_ok=True)
            save_model_weights(self.model, os.path.join(self.folder, "model.weights.h5"))
            with open(os.path.join(self.folder, "metrics.json"), "w", encoding="utf-8") as f:
                json.dump(self.best, f, indent=2)


class _RunHistory(keras.callbacks.History):
    """A History that accumulates over the per-epoch `fit` calls of one run."""

    def __init__(self):
        super().__init__()
        self.epoch = []

    def on_train_begin(self, logs=None):
        pass


def run_training(model: keras.Model, train_dataset_fn: Callable[[int], tf.data.Dataset], *, output_dir: str,
                 num_train_steps: int, steps_per_epoch: int, save_checkpoints_steps: int,
                 eval_dataset: tf.data.Dataset | None = None, callbacks: Iterable[keras.callbacks.Callback] = (),
                 early_stopping_patience: int = 0, hparams: Mapping[str, object] | None = None,
                 log_every_steps: int = 100, max_checkpoints_to_keep: int = 3,
                 verbose: int = 2) -> keras.callbacks.History:
    """Trains a model compiled by `compile_classifier` for `num_train_steps` batches, resuming
    from `<output_dir>/checkpoints`.

    `train_dataset_fn(epoch)` returns that epoch's `steps_per_epoch` batches (not repeated), the
    same ones at every call. `hparams` are written to TensorBoard when the run starts. See the
    module docstring for resuming, dev-set selection, early stopping and the TensorBoard layout.
    Returns the History of the epochs trained by this call (empty when training was finished).
    """
    if num_train_steps <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"num_train_steps and steps_per_epoch must be positive; "
                         f"got {num_train_steps} and {steps_per_epoch}")
    if early_stopping_patience and eval_dataset is None:
        raise ValueError("early stopping needs an eval_dataset")
    chief = is_chief(model.distribute_strategy)
    checkpoint_dir = os.path.join(output_dir, "checkpoints")
    write_dir = checkpoint_dir if chief else tempfile.mkdtemp(prefix="worker_checkpoints_")
    manager = checkpoint_manager(model, write_dir, max_to_keep=max_checkpoints_to_keep)
    step = manager.checkpoint.step
    done = restore_latest(manager, checkpoint_dir)
    log_dir = os.path.join(output_dir, "tensorboard")
    history = _RunHistory()
    run_callbacks: list[keras.callbacks.Callback] = [StepCheckpoint(manager, save_checkpoints_steps), history]
    if chief:
        if hparams is not None and done == 0:
            write_hparams(log_dir, hparams)
        run_callbacks += [_StepSummaries(log_dir, step, log_every_steps),
                          keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)]
    selection = None
    if eval_dataset is not None:  # a best/ without checkpoints is an older run's: ignore it
        selection = _DevSelection(output_dir, step, early_stopping_patience, read_best(output_dir) if done else None,
                                  write=chief)
        run_callbacks.append(selection)
    run_callbacks += callbacks

    try:
        while done < num_train_steps:
            if selection and selection.should_stop(done // steps_per_epoch - 1):
                logging.info("Stopped early at step %d: no better dev accuracy in %d epochs", done,
                             early_stopping_patience)
                break
            epoch, offset = divmod(done, steps_per_epoch)
            steps = min(steps_per_epoch, num_train_steps - epoch * steps_per_epoch) - offset
            model.fit(train_dataset_fn(epoch).skip(offset), initial_epoch=epoch, epochs=epoch + 1,
                      steps_per_epoch=steps, validation_data=eval_dataset, callbacks=run_callbacks, shuffle=False,
                      verbose=verbose)
            if model.stop_training:  # by one of the caller's callbacks
                break
            if int(step.numpy()) != done + steps:
                raise ValueError(f"train_dataset_fn({epoch}) ran out of batches after "
                                 f"{offset + int(step.numpy()) - done}; steps_per_epoch={steps_per_epoch}")
            done += steps
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)
    return history
