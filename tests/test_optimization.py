"""bertdistill/training/optimization.py: the schedule, AdamW (weight-decay exclusions, layer-wise learning
rates), no clipping and no second all-reduce in the optimizer, loss scaling under mixed_float16."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill.training import optimization as training
from bertdistill.training.distribute import precision_policy
from tests.test_trainer import _weights, tiny_model


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


def test_the_optimizer_neither_clips_nor_reduces_and_wraps_for_loss_scaling():
    optimizer = training.create_optimizer(learning_rate=1e-3, num_train_steps=10, num_warmup_steps=1)
    assert optimizer.global_clipnorm is None and optimizer.clipnorm is None and optimizer.gradients_all_reduced
    pairs = [(tf.constant([1.0, 2.0]), tf.Variable([0.0, 0.0]))]
    assert optimizer._all_reduce_sum_gradients(pairs) == pairs  # the trainer has summed them already
    with precision_policy("mixed_float16"):
        scaled = training.create_optimizer(learning_rate=1e-3, num_train_steps=10, num_warmup_steps=1)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, training.AdamWeightDecay)
    constant = training.create_optimizer(learning_rate=5e-5, num_train_steps=10, num_warmup_steps=0,
                                         constant_learning_rate=True)
    assert float(constant.learning_rate) == pytest.approx(5e-5)
