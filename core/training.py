"""Training utilities shared by every entry point: flags, strategy and precision, the
optimizer, and a resumable `fit` loop with TensorBoard, checkpoints and best-by-dev weights.

Resume design: model, optimizer (its `iterations` is the global step) are checkpointed with
`tf.train.CheckpointManager` every `save_checkpoints_steps`. The training dataset is seeded,
so its batch order is a pure function of the step: a restarted run restores the latest
checkpoint, skips the `done` batches it already trained on, finishes the interrupted epoch
with a short `fit`, then runs the remaining whole epochs. No step is redone and no batch is
seen twice.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable

import keras
import tensorflow as tf
from absl import flags, logging

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
NO_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")


def define_common_flags() -> None:
    """Defines the run_classifier-style flags (all optional); safe to call more than once."""
    if "output_dir" in flags.FLAGS:
        return
    f = flags
    f.DEFINE_string("task_name", "sst-2", "Task (data processor) name.")
    f.DEFINE_bool("do_train", False, "Run training.")
    f.DEFINE_bool("do_eval", False, "Evaluate on the dev set.")
    f.DEFINE_bool("do_predict", False, "Predict the test set.")
    f.DEFINE_string("data_dir", None, "Folder with the task's train/dev/test files (SST-2: tfds when unset).")
    f.DEFINE_string("vocab_file", None, "WordPiece vocab.txt (default: the checkpoint's).")
    f.DEFINE_string("bert_config_file", None, "bert_config.json of a Google checkpoint.")
    f.DEFINE_string("init_checkpoint", None,
                    "Google TF checkpoint prefix, Hugging Face folder or export folder (default: offline model).")
    f.DEFINE_bool("do_lower_case", True, "Lower-case input (uncased models).")
    f.DEFINE_integer("max_seq_length", 128, "Maximum tokens per example after WordPiece.")
    f.DEFINE_integer("train_batch_size", 32, "Training batch size.")
    f.DEFINE_integer("eval_batch_size", 8, "Evaluation batch size.")
    f.DEFINE_integer("predict_batch_size", 8, "Prediction batch size.")
    f.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of AdamW.")
    f.DEFINE_float("num_train_epochs", 3.0, "Training epochs (may be fractional).")
    f.DEFINE_float("warmup_proportion", 0.1, "Share of training steps with linear warm-up.")
    f.DEFINE_integer("save_checkpoints_steps", 1000, "Steps between checkpoints.")
    f.DEFINE_string("output_dir", None, "Where checkpoints, logs, results and the export go.")
    f.DEFINE_enum("mixed_precision", "float32", PRECISIONS, "Precision policy (mixed_bfloat16 on CPU).")
    f.DEFINE_enum("distribution_strategy", "off", STRATEGIES, "tf.distribute strategy.")
    f.DEFINE_string("tpu", None, "TPU address for --distribution_strategy=tpu.")
    f.DEFINE_bool("use_xla", False, "Compile the train step with XLA.")
    f.DEFINE_integer("seed", 12345, "Random seed (data order, initialisation, dropout).")
    f.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not on LayerNorm and biases).")
    f.DEFINE_float("max_grad_norm", 1.0, "Global gradient norm clip (0: off).")
    f.DEFINE_float("layerwise_lr_decay", 1.0, "Learning rate factor per layer below the top (1.0: off).")
    f.DEFINE_integer("early_stopping_patience", 0, "Epochs without dev improvement before stopping (0: off).")


def set_precision_policy(name: str) -> None:
    """Sets the global Keras precision policy; call before building models."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {PRECISIONS}")
    keras.mixed_precision.set_global_policy(name)


def get_distribution_strategy(name: str, tpu_address: str | None = None) -> tf.distribute.Strategy:
    """A tf.distribute strategy from its flag name; call before building models."""
    if name == "off":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        # Keras 3's fit feeds PerReplica batches it cannot convert under this strategy
        # (keras-team/keras#20585, tensorflow/tensorflow#72388): fail before any work is done.
        raise NotImplementedError("multi_worker_mirrored: Keras 3 Model.fit does not support "
                                  "MultiWorkerMirroredStrategy yet (keras-team/keras#20585); use mirrored")
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown distribution strategy {name!r}; expected one of {STRATEGIES}")


@keras.saving.register_keras_serializable(package="bertdistill")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak, self.total_steps, self.warmup_steps = peak, total_steps, warmup_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * tf.maximum(0.0, tf.where(step < self.warmup_steps, warmup, decay))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


class LayerwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is scaled per variable by `lr_multipliers[variable.path]`.

    Adam is invariant to gradient scale, so layer-wise learning rates must scale the update
    itself; weight decay keeps the base rate.
    """

    def __init__(self, lr_multipliers: dict[str, float], **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers)

    def build(self, var_list):
        super().build(var_list)
        self._lr_scales = [self.lr_multipliers.get(v.path, 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        return super().update_step(gradient, variable, learning_rate * scale if scale != 1.0 else learning_rate)


def layerwise_lr_multipliers(variables: Iterable[keras.Variable], num_layers: int, decay: float) -> dict[str, float]:
    """BERT layer-wise decay by variable path: `layer_i/...` gets decay**(L - i),
    `embeddings/...` decay**(L + 1), everything else (pooler, head) 1.0."""
    multipliers = {}
    for variable in variables:
        match = re.search(r"(?:^|/)layer_(\d+)/", variable.path)
        if match:
            multipliers[variable.path] = decay ** (num_layers - int(match.group(1)))
        elif re.search(r"(?:^|/)embeddings/", variable.path):
            multipliers[variable.path] = decay ** (num_layers + 1)
    return multipliers


def create_optimizer(*, learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                     weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                     lr_multipliers: dict[str, float] | None = None) -> keras.optimizers.Optimizer:
    """AdamW (epsilon 1e-6) with linear warm-up/decay, global norm clipping, and no weight
    decay on LayerNorm weights and biases; per-variable learning rates when `lr_multipliers`."""
    kwargs = dict(learning_rate=WarmupLinearDecay(learning_rate, num_train_steps, num_warmup_steps),
                  weight_decay=weight_decay, epsilon=1e-6, global_clipnorm=max_grad_norm or None)
    optimizer = LayerwiseAdamW(lr_multipliers, **kwargs) if lr_multipliers else keras.optimizers.AdamW(**kwargs)
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer, *, use_xla: bool = False) -> None:
    """Cross-entropy on logits + accuracy. Under mixed_float16, Keras wraps the optimizer for loss scaling."""
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=use_xla)


class _CheckpointEveryNSteps(keras.callbacks.Callback):
    """Saves model + optimizer through a CheckpointManager every N optimizer steps and at the end."""

    def __init__(self, manager: tf.train.CheckpointManager, every: int):
        super().__init__()
        self.manager, self.every = manager, every

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        if self.every and self._step() % self.every == 0:
            self.manager.save(checkpoint_number=self._step())

    def on_train_end(self, logs=None):
        if self.manager.latest_checkpoint != self._checkpoint_path():
            self.manager.save(checkpoint_number=self._step())

    def _checkpoint_path(self) -> str:
        return os.path.join(self.manager.directory, f"ckpt-{self._step()}")


class _StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `last_step` steps (fractional last epoch)."""

    def __init__(self, last_step: int):
        super().__init__()
        self.last_step = last_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.last_step:
            self.model.stop_training = True


def write_hparams(log_dir: str, hparams: dict) -> None:
    """Writes the run's hyperparameters to TensorBoard (text) and `hparams.json`."""
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "hparams.json"), "w", encoding="utf-8") as f:
        json.dump(hparams, f, indent=2, sort_keys=True, default=str)
    with tf.summary.create_file_writer(os.path.join(log_dir, "hparams")).as_default():
        table = "\n".join(f"| {k} | {v} |" for k, v in sorted(hparams.items()))
        tf.summary.text("hparams", "| flag | value |\n|---|---|\n" + table, step=0)


def best_dev_metric(output_dir: str) -> float | None:
    """The best dev accuracy recorded in `<output_dir>/best/metrics.json`, if any."""
    path = os.path.join(output_dir, "best", "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["val_accuracy"]


class _BestModel(keras.callbacks.Callback):
    """Keeps the best-by-dev-accuracy weights in `<output_dir>/best/`, across restarts."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.folder = os.path.join(output_dir, "best")
        self.best = best_dev_metric(output_dir)

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("val_accuracy")
        if accuracy is None or (self.best is not None and accuracy <= self.best):
            return
        self.best = float(accuracy)
        os.makedirs(self.folder, exist_ok=True)
        self.model.save_weights(os.path.join(self.folder, "model.weights.h5"))
        with open(os.path.join(self.folder, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"val_accuracy": self.best, "val_loss": logs.get("val_loss"), "epoch": epoch + 1,
                       "global_step": int(self.model.optimizer.iterations.numpy())}, f)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that owns the outputs (always, outside multi-worker training)."""
    return strategy.extended.should_checkpoint


def worker_output_dir(output_dir: str, strategy: tf.distribute.Strategy) -> str:
    """`output_dir` on the chief; a scratch folder under it for other workers, which must still
    save checkpoints (saving is collective) but whose files nobody reads."""
    if is_chief(strategy):
        return output_dir
    resolver = strategy.cluster_resolver
    return os.path.join(output_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def run_training(model: keras.Model, train_dataset_fn: Callable[[], tf.data.Dataset], *, output_dir: str, steps_per_epoch: int,
                 num_train_steps: int, save_checkpoints_steps: int, eval_dataset: tf.data.Dataset | None = None,
                 early_stopping_patience: int = 0, callbacks: Iterable[keras.callbacks.Callback] = (),
                 log_every_steps: int = 50) -> list[dict]:
    """Trains a compiled model for `num_train_steps`, resuming from `<output_dir>/checkpoints`.

    `train_dataset_fn` builds one seeded epoch (not repeated); it is repeated here. A fresh
    dataset per `fit` call keeps the shuffle order a function of the step alone (a reused
    dataset object carries its reshuffling state from one iterator to the next). Evaluates on
    `eval_dataset` after every epoch, keeps the best weights, logs to `<output_dir>/tensorboard`.
    Returns the per-epoch logs of this run.
    """
    output_dir = worker_output_dir(output_dir, model.distribute_strategy)
    optimizer = model.optimizer
    with model.distribute_strategy.scope():
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(output_dir, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("Resumed from %s", manager.latest_checkpoint)
    done = int(optimizer.iterations.numpy())
    if done >= num_train_steps:
        logging.info("Training already finished (%d of %d steps)", done, num_train_steps)
        return []
    all_callbacks = [_CheckpointEveryNSteps(manager, save_checkpoints_steps), _StopAtStep(num_train_steps),
                     _BestModel(output_dir), *callbacks,
                     keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), update_freq=log_every_steps)]
    if early_stopping_patience and eval_dataset is not None:
        all_callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=early_stopping_patience, mode="max"))
    history = []

    def fit(initial_epoch: int, epochs: int, steps_per_epoch: int) -> None:
        # Each fit call starts a new iterator: position it at the next unseen batch.
        data = train_dataset_fn().repeat().skip(int(optimizer.iterations.numpy()))
        result = model.fit(data, initial_epoch=initial_epoch, epochs=epochs, steps_per_epoch=steps_per_epoch,
                           validation_data=eval_dataset, callbacks=all_callbacks, verbose=2)
        history.extend({k: v[i] for k, v in result.history.items()} for i in range(len(result.epoch)))

    epoch, into_epoch = divmod(done, steps_per_epoch)
    if into_epoch:  # finish the interrupted epoch first
        fit(epoch, epoch + 1, steps_per_epoch - into_epoch)
        epoch += 1
    if not model.stop_training and epoch * steps_per_epoch < num_train_steps:
        fit(epoch, -(-num_train_steps // steps_per_epoch), steps_per_epoch)
    return history
def restore_best_weights(model: keras.Model, output_dir: str) -> bool:
    """Loads `<output_dir>/best/model.weights.h5` (this worker's copy) into `model` when it exists."""
    path = os.path.join(worker_output_dir(output_dir, model.distribute_strategy), "best", "model.weights.h5")
    if os.path.exists(path):
        model.load_weights(path)
        return True
    return False

