"""bertdistill/training/trainer.py: exact resume (dropout on), best-by-dev weights, early stopping,
TensorBoard, mixed precision, divergence stop, progress lines, and the distributed maths
(mirrored over two logical CPUs and two multi-worker processes on localhost against a
single-process run, gradient clipping on).

The model is a tiny stand-in with the project's inputs: embedding, masked mean pooling, dropout,
two dense layers named like BERT's (`layer_0`, `layer_1`), a LayerNormalization and float32 logits.
"""
import errno
import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill import errors

from bertdistill.training import optimization, trainer
from bertdistill.training.distribute import precision_policy
from tests.conftest import REPO
from tests.scripts import finish, worker_environments

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
VOCAB = 20
STEPS_PER_EPOCH = 6  # 24 training examples in batches of 4


def tiny_model(dropout: float = 0.3) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in INPUTS}
    hidden = keras.layers.Embedding(VOCAB, 8, name="embeddings")(inputs["input_ids"])
    mask = keras.ops.cast(keras.ops.expand_dims(inputs["attention_mask"], -1), hidden.dtype)
    pooled = keras.ops.sum(hidden * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
    pooled = keras.layers.Dropout(dropout)(pooled)
    for i in range(2):
        pooled = keras.layers.Dense(8, activation="tanh", name=f"layer_{i}")(pooled)
    pooled = keras.layers.LayerNormalization(name="layer_norm")(pooled)
    return keras.Model(inputs, keras.layers.Dense(2, dtype="float32", name="classifier")(pooled))


def _examples(n: int, seed: int) -> tuple[tf.RaggedTensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(5, VOCAB, size=k) for k in rng.integers(2, 9, n)]
    return tf.ragged.constant(rows, dtype=tf.int32), np.array([int(r.mean() > 12) for r in rows], "int32")


def _batch(rows: tf.RaggedTensor, labels, indices):
    ids = tf.gather(rows, indices)
    x = {"input_ids": ids.to_tensor(), "attention_mask": tf.ones_like(ids).to_tensor(),
         "token_type_ids": tf.zeros_like(ids).to_tensor()}
    return x, tf.nest.map_structure(lambda v: tf.gather(v, indices), labels)


def train_dataset_fn(extras: dict | None = None):
    """Like pipeline.make_dataset(seed=epoch): a seeded, reshuffling, dynamically padded epoch."""
    rows, labels = _examples(4 * STEPS_PER_EPOCH, seed=0)
    y = labels if extras is None else {"label_ids": labels, **extras}

    def make(epoch: int) -> tf.data.Dataset:
        order = tf.data.Dataset.range(len(labels)).shuffle(len(labels), seed=epoch)
        return order.batch(4).map(lambda i: _batch(rows, y, i))
    return make


def eval_dataset() -> tf.data.Dataset:
    rows, labels = _examples(16, seed=1)
    return tf.data.Dataset.range(len(labels)).batch(8).map(lambda i: _batch(rows, labels, i))


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy().copy() for v in model.trainable_variables}


def make_trainer(output_dir, *, learning_rate: float = 1e-2, num_train_steps: int = 15, task_class=None,
                 dropout: float = 0.3, **kwargs) -> trainer.Trainer:
    model = tiny_model(dropout)
    optimizer = optimization.create_optimizer(learning_rate=learning_rate, num_train_steps=num_train_steps,
                                              num_warmup_steps=2)
    args = dict(strategy=tf.distribute.get_strategy(), output_dir=str(output_dir), save_checkpoints_steps=4,
                log_every_steps=5)
    return trainer.Trainer((task_class or trainer.ClassifierTask)(model), optimizer, **{**args, **kwargs})


def fit(run: trainer.Trainer, num_train_steps: int = 15, **kwargs) -> list[dict]:
    args = dict(num_train_steps=num_train_steps, steps_per_epoch=STEPS_PER_EPOCH, eval_dataset=eval_dataset())
    return run.fit(kwargs.pop("dataset_fn", train_dataset_fn()), **{**args, **kwargs})


class _Killed(Exception):
    pass


def kill_after(run: trainer.Trainer, steps: int) -> None:
    """Makes `run` crash right after its `steps`-th training step (before anything else is saved)."""
    step, calls = run.train_step, []

    def counted(iterator):
        if len(calls) == steps:
            raise _Killed()
        calls.append(1)
        return step(iterator)
    run.train_step = counted


def test_resume_after_a_crash_equals_an_uninterrupted_run_with_dropout(tmp_path):
    # 15 steps = epochs of 6, 6 and 3 steps; checkpoints every 4 steps and at each epoch end.
    reference = make_trainer(tmp_path / "full")
    full = fit(reference, hparams={"learning_rate": 1e-2, "output_dir": tmp_path})
    assert [h["epoch"] for h in full] == [0, 1, 2] and all(np.isfinite(h["loss"]) for h in full)

    crashed = make_trainer(tmp_path / "resumed")
    kill_after(crashed, 10)
    with pytest.raises(_Killed):
        fit(crashed)
    assert tf.train.latest_checkpoint(tmp_path / "resumed" / "checkpoints").endswith("ckpt-8")

    resumed = make_trainer(tmp_path / "resumed")
    model = resumed.task.eval_model
    for variable in model.trainable_variables:  # everything must come from the checkpoint
        variable.assign(variable + 1.0)
    history = fit(resumed)
    assert [h["epoch"] for h in history] == [1, 2]  # finishes epoch 1 from its 3rd batch, then epoch 2
    expected = _weights(reference.task.eval_model)
    for path, value in _weights(model).items():
        np.testing.assert_allclose(value, expected[path], rtol=1e-5, atol=1e-7, err_msg=path)
    assert [h["val_accuracy"] for h in history] == [h["val_accuracy"] for h in full[1:]]
    np.testing.assert_allclose(history[-1]["loss"], full[-1]["loss"], rtol=1e-5)

    assert fit(make_trainer(tmp_path / "resumed")) == []  # finished: restores and returns


def test_dropout_state_matters_for_exact_resume(tmp_path):
    """Without restoring the dropout generators a resumed run drifts: the check above can fail."""
    reference = make_trainer(tmp_path / "full")
    fit(reference, num_train_steps=12)
    crashed = make_trainer(tmp_path / "resumed")
    kill_after(crashed, 6)
    with pytest.raises(_Killed):
        fit(crashed, num_train_steps=12)
    resumed = make_trainer(tmp_path / "resumed")
    resumed.manager.checkpoint.restore(tf.train.latest_checkpoint(tmp_path / "resumed" / "checkpoints"))
    for state in trainer._random_states([resumed.task.eval_model]):
        state.assign(state + 7)  # a different dropout stream from here on
    resumed.restore = lambda: int(resumed.step.numpy())
    fit(resumed, num_train_steps=12)
    expected = _weights(reference.task.eval_model)
    differences = [np.abs(v - expected[p]).max() for p, v in _weights(resumed.task.eval_model).items()]
    assert max(differences) > 1e-4


def _summaries(folder) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files in `folder` (not recursive)."""
    values = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return values


def test_best_dev_weights_and_tensorboard(tmp_path):
    run = make_trainer(tmp_path)
    history = fit(run, hparams={"learning_rate": 1e-2, "task_name": None})
    best = trainer.read_best(str(tmp_path))
    accuracies = [h["val_accuracy"] for h in history]
    best_epoch = int(np.argmax(accuracies))  # the first of equals: improvements are strict
    assert best == {"val_accuracy": accuracies[best_epoch], "val_loss": history[best_epoch]["val_loss"],
                    "epoch": best_epoch, "global_step": min(15, (best_epoch + 1) * STEPS_PER_EPOCH)}
    fresh = tiny_model()
    for variable in fresh.trainable_variables:
        variable.assign(variable + 1.0)
    assert trainer.restore_best_weights(fresh, str(tmp_path))
    assert trainer.evaluate(fresh, eval_dataset())["accuracy"] == pytest.approx(best["val_accuracy"])

    train = _summaries(tmp_path / "tensorboard" / "train")
    validation = _summaries(tmp_path / "tensorboard" / "validation")
    assert set(validation["accuracy"]) == set(validation["loss"]) == {6, 12, 15}
    for tag in ("loss", "cross_entropy", "learning_rate", "grad_norm", "examples_per_second"):
        assert set(train[tag]) == {5, 6, 10, 12, 15}, tag  # every 5 steps and at each epoch's end
    schedule = optimization.WarmupLinearDecay(1e-2, total_steps=15, warmup_steps=2)
    np.testing.assert_allclose(train["learning_rate"][10], float(schedule(10)), rtol=1e-6)
    assert train["loss"][5] == pytest.approx(train["cross_entropy"][5]) and train["grad_norm"][5] > 0
    assert "_hparams_/session_start_info" in _summaries(tmp_path / "tensorboard")


def test_a_run_shorter_than_log_every_steps_writes_its_scalars(tmp_path):
    # 3 steps in epochs of 2 and 1, a point due every 100 steps: points at both epochs' ends.
    history = fit(make_trainer(tmp_path, log_every_steps=100), num_train_steps=3, steps_per_epoch=2)
    train = _summaries(tmp_path / "tensorboard" / "train")
    for tag in ("loss", "cross_entropy", "learning_rate", "grad_norm", "examples_per_second"):
        assert set(train[tag]) == {2, 3}, tag
    for step, epoch in ((2, history[0]), (3, history[1])):  # each point averages its epoch's steps
        assert train["loss"][step] == pytest.approx(epoch["loss"], rel=1e-6)
        assert train["cross_entropy"][step] == pytest.approx(epoch["cross_entropy"], rel=1e-6)


def test_early_stopping_on_dev_accuracy_survives_a_restart(tmp_path):
    # A zero learning rate never improves the dev accuracy: epoch 0 is the best, epoch 1 runs out of patience.
    history = fit(make_trainer(tmp_path, learning_rate=0.0, num_train_steps=30), 30, early_stopping_patience=1)
    assert [h["epoch"] for h in history] == [0, 1]
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith(f"ckpt-{2 * STEPS_PER_EPOCH}")
    again = fit(make_trainer(tmp_path, learning_rate=0.0, num_train_steps=30), 30, early_stopping_patience=1)
    assert again == []
    with pytest.raises(ValueError, match="early stopping needs an eval_dataset"):
        fit(make_trainer(tmp_path / "no_eval"), eval_dataset=None, early_stopping_patience=1)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_logits(tmp_path, policy):
    with precision_policy(policy):
        run = make_trainer(tmp_path, num_train_steps=STEPS_PER_EPOCH)
        history = fit(run, STEPS_PER_EPOCH, eval_dataset=None)
        x, _ = next(iter(train_dataset_fn()(0)))
        logits = run.task.eval_model(x)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert np.isfinite(history[0]["loss"]) and logits.dtype == tf.float32
    # The checkpoint counts batches, also when the loss-scale optimizer skips overflowing steps.
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith(f"ckpt-{STEPS_PER_EPOCH}")
    assert 0 < int(run.optimizer.iterations.numpy()) <= STEPS_PER_EPOCH
    assert isinstance(run.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")


class ScaledLossTask(trainer.ClassifierTask):
    """Cross-entropy times a per-example factor from the data (NaN in one batch: divergence)."""

    def loss_terms(self, x, y):
        terms = super().loss_terms(x, y["label_ids"])
        return {"cross_entropy": terms["cross_entropy"] * y["scale"]}


def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Batch 5 of epoch 0 (examples 16..19 of the shuffled order are what it holds) gets a NaN loss.
    run = make_trainer(tmp_path, task_class=ScaledLossTask)  # seeds TensorFlow: the shuffle order follows
    scale = np.ones(4 * STEPS_PER_EPOCH, np.float32)
    order = list(tf.data.Dataset.range(len(scale)).shuffle(len(scale), seed=0).as_numpy_iterator())
    scale[order[16:20]] = np.nan
    before = _weights(run.task.eval_model)
    with pytest.raises(trainer.TrainingDiverged, match=r"step 5: loss nan.*ckpt-4"):
        fit(run, dataset_fn=train_dataset_fn({"scale": scale}))
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-4")
    assert trainer.read_best(str(tmp_path)) is None  # no epoch finished: nothing kept
    assert any(not np.array_equal(v, before[p]) for p, v in _weights(run.task.eval_model).items())


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path, caplog):
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)
    with caplog.at_level("INFO"):
        fit(make_trainer(tmp_path, log_every_steps=5), eval_dataset=None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split()[1] for line in lines] == ["5/15", "10/15", "15/15"]
    assert all("loss" in line and "examples/s" in line and "ETA" in line for line in lines)


# Strategies: each in fresh processes (logical devices and collectives are fixed at TF start-up).

WORKER = str(REPO / "tests" / "distributed_worker.py")


def _start(strategy: str, output_dir, weights, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, WORKER, strategy, str(output_dir), str(weights)], env=env,
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_mirrored_and_two_workers_equal_a_single_process(tmp_path):
    runs = {"single": _start("off", tmp_path / "single", tmp_path / "single.npz"),
            "mirrored": _start("mirrored", tmp_path / "mirrored", tmp_path / "mirrored.npz")}
    for i, env in enumerate(worker_environments(2)):
        runs[f"worker{i}"] = _start("multi_worker_mirrored", tmp_path / f"worker{i}", tmp_path / f"worker{i}.npz", env)
    results = dict(zip(runs, finish(list(runs.values()), timeout=240)))
    for name, (code, err) in results.items():
        assert (tmp_path / f"{name}.npz").exists(), f"{name} exited {code}: {err[-3000:]}"
    weights = {name: dict(np.load(tmp_path / f"{name}.npz")) for name in runs}
    single = weights.pop("single")
    steps = int(single["steps"])  # 48 examples in bucketed batches of 8: some buckets end in a partial batch
    assert single["replicas"] == 1 and steps >= 6
    assert np.isfinite(single["loss"])
    norms = _summaries(tmp_path / "single" / "tensorboard" / "train")["grad_norm"]
    assert len(norms) == steps and sum(n > 0.05 for n in norms.values()) >= 3  # clipping at MAX_GRAD_NORM acted
    for name, values in weights.items():
        assert values["replicas"] == 2 and values["steps"] == steps, name
        for key in set(single) - {"replicas", "steps"}:
            np.testing.assert_allclose(values[key], single[key], atol=1e-5, rtol=0, err_msg=f"{name}: {key}")
    for key in single:  # both workers hold identical weights
        np.testing.assert_array_equal(weights["worker0"][key], weights["worker1"][key], err_msg=key)
    assert (tmp_path / "worker0" / "checkpoints" / "checkpoint").exists()  # the chief wrote the checkpoints
    assert not (tmp_path / "worker1" / "checkpoints").exists()


def test_a_checkpoint_restores_the_model_weights_into_a_fresh_model(tmp_path):
    run = make_trainer(tmp_path)
    fit(run, eval_dataset=None)
    fresh = tiny_model()
    for variable in fresh.trainable_variables:
        variable.assign(variable + 1.0)
    assert trainer.restore_from_checkpoint(fresh, str(tmp_path / "checkpoints")) == 15
    expected = _weights(run.task.eval_model)
    for path, value in _weights(fresh).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=path)
    assert trainer.restore_from_checkpoint(fresh, str(tmp_path / "nothing")) is None


def test_a_full_disk_while_checkpointing_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    run = make_trainer(tmp_path)
    save = run.manager.save

    def full_disk(checkpoint_number):
        if checkpoint_number < 8:
            return save(checkpoint_number=checkpoint_number)
        partial = tmp_path / "checkpoints" / f"ckpt-{checkpoint_number}_temp"
        partial.mkdir()
        (partial / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial))

    monkeypatch.setattr(run.manager, "save", full_disk)
    with pytest.raises(errors.UserError, match=r"checkpoint of step 8 .*No space left on device.*resumes from .*ckpt-"):
        fit(run)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if "ckpt-8" in p.name] == []
    assert not tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-8")


def test_a_weights_file_is_compared_with_the_model_by_names_and_shapes(tmp_path):
    def dense_stack(*widths):
        return keras.Sequential([keras.Input((4,)), *[keras.layers.Dense(width) for width in widths]])

    path = str(tmp_path / "two.weights.h5")
    trainer.save_model_weights(dense_stack(8, 2), path)
    assert trainer.weights_file_difference(dense_stack(8, 2), path) is None
    assert trainer.weights_file_difference(dense_stack(8), path).startswith("it holds 2 weights the model has not")
    assert trainer.weights_file_difference(dense_stack(8, 2, 2), path).startswith("2 of the model's weights are not in")
    assert trainer.weights_file_difference(dense_stack(6, 2), path) == (
        "layers/dense/vars/0 is (4, 8) in it, (4, 6) in the model")
    (tmp_path / "text.weights.h5").write_text("not HDF5")
    with pytest.raises(errors.UserError, match="text.weights.h5 is not a Keras weights file"):
        trainer.weights_file_difference(dense_stack(8, 2), str(tmp_path / "text.weights.h5"))
