"""Training utilities: schedule, weight decay exclusion, layer-wise rates, flags, resume."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from core import pipeline, training
from core.bert import BertClassifier, BertEncoder
from core.data import InputExample
from core.tokenization import Tokenizer
from tests.bert_fixtures import tiny_config, write_vocab


def test_warmup_then_linear_decay():
    schedule = training.WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    values = [float(schedule(s)) for s in (0, 5, 10, 55, 100, 120)]
    np.testing.assert_allclose(values, [0, 5e-4, 1e-3, 5e-4, 0, 0], atol=1e-9)
    assert training.WarmupLinearDecay(**schedule.get_config()).get_config() == schedule.get_config()


def test_weight_decay_skips_layer_norm_and_biases():
    model = BertClassifier(BertEncoder(tiny_config()), 2)
    optimizer = training.create_optimizer(learning_rate=0.1, num_train_steps=10, num_warmup_steps=0,
                                          weight_decay=0.5)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer.apply([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if not np.array_equal(before[v.path], v.numpy())}
    expect_skip = {v.path for v in model.trainable_variables if "LayerNorm" in v.path or v.path.endswith("bias")}
    assert decayed == {v.path for v in model.trainable_variables} - expect_skip
    assert "layer_0/query/kernel" in decayed and "layer_0/attention_LayerNorm/gamma" not in decayed


def test_layerwise_learning_rates_scale_the_update():
    model = BertClassifier(BertEncoder(tiny_config()), 2)
    multipliers = training.layerwise_lr_multipliers(model.trainable_variables, num_layers=2, decay=0.5)
    assert multipliers["layer_1/query/kernel"] == 0.5 and multipliers["layer_0/query/kernel"] == 0.25
    assert multipliers["embeddings/word_embeddings/embeddings"] == 0.125
    assert "classifier/kernel" not in multipliers and "pooler/kernel" not in multipliers
    optimizer = training.create_optimizer(learning_rate=0.01, num_train_steps=10, num_warmup_steps=0,
                                          weight_decay=0.0, max_grad_norm=0, lr_multipliers=multipliers)
    variables = {v.path: v for v in model.trainable_variables}
    before = {p: v.numpy().copy() for p, v in variables.items()}
    optimizer.apply([tf.ones_like(v) for v in model.trainable_variables], model.trainable_variables)
    step = {p: float(np.abs(before[p] - v.numpy()).max()) for p, v in variables.items()}
    lr = 0.01  # schedule value at step 0 without warm-up
    np.testing.assert_allclose(step["classifier/kernel"], lr, rtol=1e-3)
    np.testing.assert_allclose(step["layer_0/query/kernel"], lr * 0.25, rtol=1e-3)


def test_flagfile_and_validation(tmp_path):
    training.define_common_flags()
    training.define_common_flags()  # idempotent
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--learning_rate=2e-5\n--mixed_precision=mixed_bfloat16\n--do_train\n")
    try:
        flags.FLAGS(["prog", f"--flagfile={flagfile}", "--train_batch_size=16"])
        assert (flags.FLAGS.learning_rate, flags.FLAGS.mixed_precision, flags.FLAGS.do_train,
                flags.FLAGS.train_batch_size) == (2e-5, "mixed_bfloat16", True, 16)
        with pytest.raises(flags.IllegalFlagValueError):
            flags.FLAGS(["prog", "--mixed_precision=float8"])
    finally:
        flags.FLAGS.unparse_flags()
    with pytest.raises(ValueError, match="unknown distribution strategy 'parameter_server'"):
        training.get_distribution_strategy("parameter_server")
    with pytest.raises(ValueError, match="unknown precision 'float64'"):
        training.set_precision_policy("float64")


def _setup(tmp_path, policy="float32"):
    """A dropout-free tiny classifier and a seeded 40-example dataset."""
    keras.utils.set_random_seed(1)
    training.set_precision_policy(policy)
    tokenizer = Tokenizer(write_vocab(tmp_path / "vocab.txt"))
    rng = np.random.default_rng(0)
    words = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull"]
    examples = [InputExample(str(i), " ".join(rng.choice(words, rng.integers(1, 8))), None, str(i % 2))
                for i in range(40)]
    features = pipeline.convert_examples_to_features(examples, tokenizer, ["0", "1"], 16)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertClassifier(BertEncoder(config), 2, dropout=0.0)
    steps_per_epoch = pipeline.num_batches(features, batch_size=8, is_training=True, max_seq_length=16)
    training.compile_classifier(model, training.create_optimizer(
        learning_rate=1e-3, num_train_steps=3 * steps_per_epoch, num_warmup_steps=2))
    dataset = lambda: pipeline.make_dataset(features, batch_size=8, is_training=True, seed=7, max_seq_length=16)  # noqa: E731
    eval_dataset = pipeline.make_dataset(features, batch_size=8, is_training=False)
    return model, dataset, eval_dataset, steps_per_epoch


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at_step:
            raise KeyboardInterrupt("simulated kill")


def test_resume_continues_from_saved_step_and_matches_uninterrupted_run(tmp_path):
    model, data, dev, spe = _setup(tmp_path)
    initial = model.get_weights()
    total = 3 * spe
    kwargs = dict(steps_per_epoch=spe, num_train_steps=total, save_checkpoints_steps=4, eval_dataset=dev)
    training.run_training(model, data, output_dir=str(tmp_path / "full"), **kwargs)
    expected = model.get_weights()

    resumed, data, dev, _ = _setup(tmp_path)
    resumed.set_weights(initial)
    with pytest.raises(KeyboardInterrupt):
        training.run_training(resumed, data, output_dir=str(tmp_path / "cut"), callbacks=[_Crash(spe + 2)], **kwargs)
    saved = tf.train.latest_checkpoint(str(tmp_path / "cut" / "checkpoints"))
    assert saved.endswith(f"ckpt-{(spe + 2) // 4 * 4}")

    restarted, data, dev, _ = _setup(tmp_path)  # a fresh process would rebuild everything
    steps_run = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps_run.append(b))
    training.run_training(restarted, data, output_dir=str(tmp_path / "cut"), callbacks=[counter], **kwargs)
    assert len(steps_run) == total - (spe + 2) // 4 * 4
    assert int(restarted.optimizer.iterations.numpy()) == total
    for got, want in zip(restarted.get_weights(), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert os.path.exists(tmp_path / "cut" / "best" / "model.weights.h5")
    assert any(name.startswith("events") for _, _, files in os.walk(tmp_path / "cut" / "tensorboard") for name in files)
    assert training.run_training(restarted, data, output_dir=str(tmp_path / "cut"), **kwargs) == []


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_has_finite_loss(tmp_path, policy):
    try:
        model, data, dev, spe = _setup(tmp_path, policy)
        history = training.run_training(model, data, output_dir=str(tmp_path), steps_per_epoch=spe,
                                        num_train_steps=2, save_checkpoints_steps=0, eval_dataset=dev)
        assert np.isfinite(history[-1]["loss"]) and np.isfinite(history[-1]["val_loss"])
        x, _ = next(iter(dev))
        assert model(x).dtype == "float32"
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert not isinstance(model.optimizer.inner_optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        training.set_precision_policy("float32")
