"""bertdistill/training.py: flags, strategy and precision names, the schedule, AdamW (weight-decay
exclusions, layer-wise learning rates), and run_training (exact resume, best-by-dev weights,
early stopping, TensorBoard, mixed precision, mirrored and multi-worker strategies).

The model is a tiny stand-in with the project's inputs: embedding, masked mean pooling, two
dense layers named like BERT's (`layer_0`, `layer_1`), a LayerNormalization and float32 logits.
"""
import glob
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from bertdistill import training
from tests.conftest import REPO

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
VOCAB = 20
STEPS_PER_EPOCH = 6  # 24 training examples in batches of 4


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in INPUTS}
    hidden = keras.layers.Embedding(VOCAB, 8, name="embeddings")(inputs["input_ids"])
    mask = keras.ops.cast(keras.ops.expand_dims(inputs["attention_mask"], -1), hidden.dtype)
    pooled = keras.ops.sum(hidden * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
    for i in range(2):
        pooled = keras.layers.Dense(8, activation="tanh", name=f"layer_{i}")(pooled)
    pooled = keras.layers.LayerNormalization(name="layer_norm")(pooled)
    return keras.Model(inputs, keras.layers.Dense(2, dtype="float32", name="classifier")(pooled))


def _examples(n: int, seed: int) -> tuple[tf.RaggedTensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(5, VOCAB, size=k) for k in rng.integers(2, 9, n)]
    return tf.ragged.constant(rows, dtype=tf.int32), np.array([int(r.mean() > 12) for r in rows], "int32")


def _batch(rows: tf.RaggedTensor, labels: np.ndarray, indices):
    ids = tf.gather(rows, indices)
    x = {"input_ids": ids.to_tensor(), "attention_mask": tf.ones_like(ids).to_tensor(),
         "token_type_ids": tf.zeros_like(ids).to_tensor()}
    return x, tf.gather(labels, indices)


def train_dataset_fn():
    """Like pipeline.make_dataset(seed=epoch): a seeded, reshuffling, dynamically padded epoch."""
    rows, labels = _examples(4 * STEPS_PER_EPOCH, seed=0)

    def make(epoch: int) -> tf.data.Dataset:
        order = tf.data.Dataset.range(len(labels)).shuffle(len(labels), seed=epoch)
        return order.batch(4).map(lambda i: _batch(rows, labels, i))
    return make


def eval_dataset() -> tf.data.Dataset:
    rows, labels = _examples(16, seed=1)
    return tf.data.Dataset.range(len(labels)).batch(8).map(lambda i: _batch(rows, labels, i))


def compiled_model(learning_rate: float = 1e-2, num_train_steps: int = 15) -> keras.Model:
    model = tiny_model()
    training.compile_classifier(model, training.create_optimizer(
        learning_rate=learning_rate, num_train_steps=num_train_steps, num_warmup_steps=2))
    return model


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy().copy() for v in model.trainable_variables}


# Flags and names

def test_flags_defaults_idempotent_and_flagfile(tmp_path):
    fv = flags.FlagValues()
    training.define_common_flags(fv)
    training.define_common_flags(fv)  # a second call is a no-op
    fv(["prog"])
    assert (fv.do_lower_case, fv.max_seq_length, fv.train_batch_size, fv.eval_batch_size, fv.predict_batch_size,
            fv.learning_rate, fv.num_train_epochs, fv.warmup_proportion, fv.save_checkpoints_steps) == (
        True, 128, 32, 8, 8, 5e-5, 3.0, 0.1, 1000)
    assert (fv.task_name, fv.do_train, fv.do_eval, fv.do_predict, fv.data_dir) == ("sst-2", False, False, False, None)
    assert (fv.mixed_precision, fv.distribution_strategy, fv.use_xla, fv.seed, fv.weight_decay, fv.max_grad_norm,
            fv.layerwise_lr_decay, fv.early_stopping_patience, fv.output_dir) == (
        "float32", "off", False, 12345, 0.01, 1.0, 1.0, 0, None)

    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--learning_rate=2e-5\n--mixed_precision=mixed_bfloat16\n--do_train\n--train_batch_size=64\n")
    fv = flags.FlagValues()
    training.define_common_flags(fv)
    fv(["prog", f"--flagfile={flagfile}", "--train_batch_size=16"])  # the command line after it wins
    assert (fv.learning_rate, fv.mixed_precision, fv.do_train, fv.train_batch_size) == (
        2e-5, "mixed_bfloat16", True, 16)


def test_unknown_names_are_rejected():
    fv = flags.FlagValues()
    training.define_common_flags(fv)
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--mixed_precision=float8"])
    with pytest.raises(ValueError, match="unknown distribution strategy 'horovod'"):
        training.get_distribution_strategy("horovod")
    with pytest.raises(ValueError, match="unknown precision policy 'float8'"):
        training.set_precision_policy("float8")
    assert keras.mixed_precision.global_policy().name == "float32"


# Schedule and optimizer

def test_warmup_then_linear_decay_and_config_round_trip():
    schedule = training.WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 130)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-10)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, training.WarmupLinearDecay) and restored.get_config() == schedule.get_config()
    optimizer = training.create_optimizer(learning_rate=1e-3, num_train_steps=100, num_warmup_steps=10)
    assert optimizer.get_config()["learning_rate"]["config"] == schedule.get_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        training.WarmupLinearDecay(1e-3, total_steps=10, warmup_steps=20)


def test_weight_decay_skips_layer_norm_and_biases():
    assert [bool(training.NO_WEIGHT_DECAY.search(p)) for p in (
        "embeddings/LayerNorm/gamma", "layer_3/attention_LayerNorm/beta", "layer_3/query/bias",
        "layer_normalization/gamma", "layer_3/query/kernel", "embeddings/word_embeddings/embeddings",
        "classifier/kernel", "bias_free/kernel")] == [True] * 4 + [False] * 4
    model = tiny_model()
    optimizer = training.create_optimizer(learning_rate=0.1, num_train_steps=10, num_warmup_steps=0,
                                          weight_decay=0.5)
    before = _weights(model)
    # Zero gradients: Adam's step is 0, so any change is weight decay, w <- w * (1 - lr * wd).
    optimizer.apply([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
    after = _weights(model)
    decayed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert decayed == {"embeddings/embeddings", "layer_0/kernel", "layer_1/kernel", "classifier/kernel"}
    for path in decayed:
        np.testing.assert_allclose(after[path], before[path] * 0.95, rtol=1e-6)


def test_layerwise_learning_rates_scale_the_adam_step():
    paths = ["embeddings/word_embeddings/embeddings", "layer_0/query/kernel", "layer_11/output_LayerNorm/gamma",
             "pooler/kernel", "classifier/bias"]
    assert training.layerwise_lr_multipliers(paths, 12, 0.5) == {
        paths[0]: 0.5 ** 13, paths[1]: 0.5 ** 12, paths[2]: 0.5}
    assert training.layerwise_lr_multipliers(paths, None, 0.5) == training.layerwise_lr_multipliers(paths, 12, 0.5)
    with pytest.raises(ValueError, match="layer_11/output_LayerNorm/gamma is beyond num_layers=4"):
        training.layerwise_lr_multipliers(paths, 4, 0.5)
    with pytest.raises(ValueError, match="not both"):
        training.create_optimizer(learning_rate=0.01, num_train_steps=10, num_warmup_steps=0,
                                  layerwise_lr_decay=0.5, lr_multipliers={})

    def first_step(**kwargs) -> dict[str, float]:
        """|update| per variable after one step with the same gradient (all ones) everywhere."""
        model = tiny_model()
        optimizer = training.create_optimizer(learning_rate=0.01, num_train_steps=10, num_warmup_steps=0,
                                              weight_decay=0.0, **kwargs)
        before = _weights(model)
        optimizer.apply([tf.ones_like(v) for v in model.trainable_variables], model.trainable_variables)
        moves = {p: np.abs(v - before[p]) for p, v in _weights(model).items()}
        for move in moves.values():  # every element of a variable moves by the same amount
            np.testing.assert_allclose(move, move.max(), rtol=1e-4)
        return {p: float(move.max()) for p, move in moves.items()}

    # Adam's first step is lr * g / (|g| + eps), about lr whatever the gradient: without
    # multipliers every weight moves by the same amount, so scaling gradients would change nothing.
    np.testing.assert_allclose(list(first_step().values()), 0.01, rtol=1e-3)
    # Two layers: layer_1 (top) x0.5, layer_0 x0.25, embeddings x0.125, norm and head x1.
    moves = first_step(layerwise_lr_decay=0.5)
    expected = {"embeddings/embeddings": 0.125, "layer_0/kernel": 0.25, "layer_0/bias": 0.25, "layer_1/kernel": 0.5,
                "layer_1/bias": 0.5, "layer_norm/gamma": 1.0, "layer_norm/beta": 1.0, "classifier/kernel": 1.0,
                "classifier/bias": 1.0}
    np.testing.assert_allclose([moves[p] for p in expected], [0.01 * m for m in expected.values()], rtol=1e-3)
    moves = first_step(lr_multipliers={"classifier/kernel": 0.1})
    np.testing.assert_allclose([moves["classifier/kernel"], moves["layer_0/kernel"]], [0.001, 0.01], rtol=1e-3)


# run_training

class _Killed(Exception):
    pass


class _KillAtStep(keras.callbacks.Callback):
    """Simulates a crash right after optimizer step `step` (before any later checkpoint)."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise _Killed()


def _run(model, output_dir, **kwargs) -> keras.callbacks.History:
    args = dict(output_dir=str(output_dir), num_train_steps=15, steps_per_epoch=STEPS_PER_EPOCH,
                save_checkpoints_steps=4, eval_dataset=eval_dataset(), verbose=0)
    return training.run_training(model, train_dataset_fn(), **{**args, **kwargs})


def _summaries(folder) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files in `folder` (not recursive)."""
    values = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return values


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    # 15 steps = epochs of 6, 6 and 3 steps; checkpoints every 4 steps and at each epoch end.
    reference = compiled_model()
    full = _run(reference, tmp_path / "full", hparams={"learning_rate": 1e-2, "output_dir": tmp_path})
    assert full.epoch == [0, 1, 2] and all(np.isfinite(full.history["loss"]))

    crashed = compiled_model()
    with pytest.raises(_Killed):
        _run(crashed, tmp_path / "resumed", callbacks=[_KillAtStep(10)])
    assert tf.train.latest_checkpoint(tmp_path / "resumed" / "checkpoints").endswith("ckpt-8")

    resumed = compiled_model()
    for variable in resumed.trainable_variables:  # everything must come from the checkpoint
        variable.assign(variable + 1.0)
    history = _run(resumed, tmp_path / "resumed")
    assert history.epoch == [1, 2]  # finishes epoch 1 from its 3rd batch, then the 3-step epoch 2
    assert int(resumed.optimizer.iterations.numpy()) == int(reference.optimizer.iterations.numpy()) == 15
    expected = _weights(reference)
    for path, value in _weights(resumed).items():
        np.testing.assert_allclose(value, expected[path], rtol=1e-5, atol=1e-7, err_msg=path)
    assert history.history["val_accuracy"] == full.history["val_accuracy"][1:]

    again = _run(compiled_model(), tmp_path / "resumed")  # finished: restores and returns
    assert again.epoch == []


def test_best_dev_weights_and_tensorboard(tmp_path):
    model = compiled_model()
    history = _run(model, tmp_path, hparams={"learning_rate": 1e-2, "task_name": None}, log_every_steps=5)
    best = training.read_best(str(tmp_path))
    best_epoch = int(np.argmax(history.history["val_accuracy"]))  # the first of equals: improvements are strict
    assert best == {"val_accuracy": history.history["val_accuracy"][best_epoch],
                    "val_loss": history.history["val_loss"][best_epoch], "epoch": best_epoch,
                    "global_step": min(15, (best_epoch + 1) * STEPS_PER_EPOCH)}
    fresh = compiled_model()
    for variable in fresh.trainable_variables:
        variable.assign(variable + 1.0)
    assert training.restore_best_weights(fresh, str(tmp_path))
    _, accuracy = fresh.evaluate(eval_dataset(), verbose=0)
    assert accuracy == pytest.approx(best["val_accuracy"])

    train = _summaries(tmp_path / "tensorboard" / "train")
    validation = _summaries(tmp_path / "tensorboard" / "validation")
    assert set(train["epoch_loss"]) == set(validation["epoch_accuracy"]) == {0, 1, 2}
    assert set(train["batch_loss"]) == set(train["batch_accuracy"]) == set(train["learning_rate"]) == {5, 10, 15}
    schedule = training.WarmupLinearDecay(1e-2, total_steps=15, warmup_steps=2)
    np.testing.assert_allclose(train["learning_rate"][10], float(schedule(10)), rtol=1e-6)
    assert "_hparams_/session_start_info" in _summaries(tmp_path / "tensorboard")


def test_early_stopping_on_dev_accuracy_survives_a_restart(tmp_path):
    # A zero learning rate never improves the dev accuracy: epoch 0 is the best, epoch 1 runs out of patience.
    history = _run(compiled_model(learning_rate=0.0), tmp_path, num_train_steps=30, early_stopping_patience=1)
    assert history.epoch == [0, 1]
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith(f"ckpt-{2 * STEPS_PER_EPOCH}")
    again = _run(compiled_model(learning_rate=0.0), tmp_path, num_train_steps=30, early_stopping_patience=1)
    assert again.epoch == []
    with pytest.raises(ValueError, match="early stopping needs an eval_dataset"):
        _run(compiled_model(), tmp_path / "no_eval", eval_dataset=None, early_stopping_patience=1)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_logits(tmp_path, policy):
    with training.precision_policy(policy):
        model = compiled_model(num_train_steps=STEPS_PER_EPOCH)
        history = _run(model, tmp_path, num_train_steps=STEPS_PER_EPOCH, eval_dataset=None)
        x, _ = next(iter(train_dataset_fn()(0)))
        logits = model(x)
        optimizer = model.optimizer
    assert keras.mixed_precision.global_policy().name == "float32"
    assert np.isfinite(history.history["loss"]).all() and logits.dtype == tf.float32
    # The checkpoint counts batches, also when the loss-scale optimizer skips overflowing steps.
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith(f"ckpt-{STEPS_PER_EPOCH}")
    assert 0 < int(optimizer.iterations.numpy()) <= STEPS_PER_EPOCH
    if policy == "mixed_float16":  # compile wrapped our optimizer once for loss scaling
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(optimizer.inner_optimizer, training.AdamWeightDecay)
    else:
        assert isinstance(optimizer, training.AdamWeightDecay)


# Strategies: each in fresh processes (logical devices and collectives are fixed at TF start-up).

WORKER = """
import json, sys
import numpy as np
import tensorflow as tf
strategy_name, output_dir = sys.argv[1:3]
if strategy_name == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bertdistill import training
strategy = training.get_distribution_strategy(strategy_name)
from tests.test_training import STEPS_PER_EPOCH, compiled_model, eval_dataset, train_dataset_fn
with strategy.scope():
    model = compiled_model(num_train_steps=4)
history = training.run_training(model, train_dataset_fn(), output_dir=output_dir, num_train_steps=4,
                                steps_per_epoch=STEPS_PER_EPOCH, save_checkpoints_steps=2,
                                eval_dataset=eval_dataset(), verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                  "iterations": int(model.optimizer.iterations.numpy()),
                  "checkpoint": tf.train.latest_checkpoint(output_dir + "/checkpoints")}))
"""


def _start_worker(strategy: str, output_dir, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", WORKER, strategy, str(output_dir)], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(workers: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    results = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            results.append((worker.returncode, out, err))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return results


def test_mirrored_over_two_logical_cpus(tmp_path):
    [(code, out, err)] = _finish([_start_worker("mirrored", tmp_path)], timeout=150)
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["iterations"] == 4 and np.isfinite(result["loss"]).all()
    assert result["checkpoint"].endswith("ckpt-4")


# Keras 3.15.1 / TF 2.21: Model.fit fails under multi-worker MultiWorkerMirroredStrategy (see
# training.get_distribution_strategy); these are the two failures, in the order they are hit.
KNOWN_MULTI_WORKER_ERRORS = ("with an unsupported type (<class 'dict'>) to a Tensor",
                             "Invalid reduction dimension 0 for input with 0 dimensions")


def test_multi_worker_mirrored_two_workers(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = [_start_worker("multi_worker_mirrored", tmp_path,
                             {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    results = _finish(workers, timeout=150)
    if all(code == 0 for code, _, _ in results):
        for _, out, _ in results:
            result = json.loads(out.strip().splitlines()[-1])
            assert result["replicas"] == 2 and result["iterations"] == 4 and np.isfinite(result["loss"]).all()
        return
    errors = "\n".join(err for code, _, err in results if code)
    known = [e for e in KNOWN_MULTI_WORKER_ERRORS if e in errors]
    assert known, errors[-3000:]
    pytest.xfail(f"Keras 3 Model.fit under MultiWorkerMirroredStrategy: {known[0]} "
                 "(keras-team/keras#20329/#20585, tensorflow/tensorflow#72388)")
