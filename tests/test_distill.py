"""Distillation losses against NumPy, and the stored-logits distiller training a tiny student."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill.distill import distill

from bertdistill.training import optimization, trainer

TEACHER = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, -3.0]], np.float32)
STUDENT = np.array([[1.0, 0.0, 0.0], [-0.5, 1.5, 0.3]], np.float32)
LABELS = np.array([0, 2], np.int32)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_logits_mse_is_the_squared_distance_summed_over_classes():
    expected = ((STUDENT - TEACHER) ** 2).sum(-1).mean()
    np.testing.assert_allclose(float(distill.logits_mse(TEACHER, STUDENT)), expected, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_cross_entropy_matches_numpy_with_t_squared(temperature):
    teacher = np.exp(np_log_softmax(TEACHER / temperature))
    expected = -(teacher * np_log_softmax(STUDENT / temperature)).sum(-1).mean() * temperature ** 2
    np.testing.assert_allclose(float(distill.soft_cross_entropy(TEACHER, STUDENT, temperature)), expected, rtol=1e-5)


def test_kd_mixes_soft_and_hard_terms_by_alpha():
    temperature, alpha = 2.0, 0.3
    terms = distill.distillation_terms("kd", temperature=temperature, alpha=alpha)(LABELS, TEACHER, STUDENT)
    soft = -(np.exp(np_log_softmax(TEACHER / 2)) * np_log_softmax(STUDENT / 2)).sum(-1).mean() * 4
    hard = -np_log_softmax(STUDENT)[np.arange(2), LABELS].mean()
    np.testing.assert_allclose(float(terms["soft_loss"]), (1 - alpha) * soft, rtol=1e-5)
    np.testing.assert_allclose(float(terms["hard_loss"]), alpha * hard, rtol=1e-5)


def test_unknown_loss_and_bad_kd_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown distillation loss 'l1'"):
        distill.distillation_terms("l1")
    with pytest.raises(ValueError, match="temperature > 0"):
        distill.distillation_terms("kd", temperature=0.0)


def test_one_registry_and_one_temperature_check_for_every_task():
    assert set(distill.LOGIT_LOSSES) == {"mse", "kd", "tinybert_prediction"}
    assert set(distill.STORED_LOGITS_LOSSES) <= set(distill.LOGIT_LOSSES)
    for temperature, alpha in ((0.0, 0.5), (-1.0, 0.5), (float("nan"), 0.5), (1.0, -0.1), (1.0, 1.5)):
        with pytest.raises(ValueError, match=r"^need temperature > 0 and 0 <= alpha <= 1; got "):
            distill.check_temperature(temperature, alpha)
    with pytest.raises(ValueError, match=r"^need --temperature > 0 and 0 <= --hard_label_weight <= 1; got 0\.0"):
        distill.check_temperature(0.0, 0.0, ("--temperature", "--hard_label_weight"))
    from bertdistill.cli import script_flags
    from bertdistill.errors import UserError

    with pytest.raises(UserError, match="need --temperature > 0 and 0 <= --alpha <= 1"):
        script_flags.check_arguments("distil_lstm/main.py", ["--mode=distil", "--output_dir=/tmp/x", "--temperature=0"])


@pytest.mark.parametrize("weight, terms", [(0.0, {"soft_cross_entropy"}),
                                           (0.25, {"soft_cross_entropy", "hard_cross_entropy"}),
                                           (1.0, {"hard_cross_entropy"})])
def test_tinybert_prediction_has_a_term_only_where_its_weight_counts(weight, terms):
    fn = distill.distillation_terms("tinybert_prediction", temperature=2.0, alpha=weight)
    out = fn(LABELS if weight > 0 else None, TEACHER if weight < 1 else None, STUDENT)
    assert set(out) == terms
    kd = distill.distillation_terms("kd", temperature=2.0, alpha=weight)(LABELS, TEACHER, STUDENT)
    if weight < 1:
        assert float(out["soft_cross_entropy"]) == float(kd["soft_loss"])
    if weight > 0:
        assert float(out["hard_cross_entropy"]) == float(kd["hard_loss"])


@pytest.mark.parametrize("loss", ["mse", "kd"])
def test_distillation_task_moves_the_student_toward_the_teacher(tmp_path, loss):
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    task = distill.LogitsDistillationTask(student, loss, temperature=2.0, alpha=0.5)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    teacher = x @ np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    labels = teacher.argmax(1).astype(np.int32)
    y = {"label_ids": labels, "teacher_logits": teacher}
    terms = task.loss_terms(x, y)
    assert set(terms) == set(distill.LOSS_TERMS[loss])
    logits = np.asarray(student(x))  # no dropout: the same logits as in training mode
    if loss == "mse":  # the task's terms against NumPy, not against the functions the task calls
        expected = {"mse_loss": ((logits - teacher) ** 2).sum(-1).mean()}
    else:  # T = 2, alpha = 0.5: 0.5 * 4 * soft cross-entropy and 0.5 * hard cross-entropy
        soft = -(np.exp(np_log_softmax(teacher / 2)) * np_log_softmax(logits / 2)).sum(-1).mean()
        hard = -np_log_softmax(logits)[np.arange(len(labels)), labels].mean()
        expected = {"soft_loss": 0.5 * 4 * soft, "hard_loss": 0.5 * hard}
    for name, value in terms.items():
        np.testing.assert_allclose(float(value), expected[name], rtol=1e-5)

    before = float(distill.logits_mse(teacher, student(x)))
    run = trainer.Trainer(task, optimization.create_optimizer(learning_rate=0.05, num_train_steps=80,
                                                              num_warmup_steps=0, weight_decay=0.0),
                          strategy=tf.distribute.get_strategy(), output_dir=str(tmp_path), max_grad_norm=0.0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = run.fit(lambda epoch: dataset, num_train_steps=80, steps_per_epoch=4,
                      eval_dataset=tf.data.Dataset.from_tensor_slices((x, labels)).batch(16))
    assert float(distill.logits_mse(teacher, student(x))) < before / 2
    assert set(distill.LOSS_TERMS[loss]) <= set(history[-1])
    assert history[-1]["val_accuracy"] > 0.8


# --- Intermediate-layer losses (TinyBERT) -----------------------------------------------------

MASK = np.array([[1, 1, 1], [1, 1, 0]], np.int32)  # B=2, T=3; the second sequence has one pad


def np_hidden_mse(teacher, student, mask):
    """Per example: the mean of (s - t)^2 over its real tokens' vectors (gathered, not masked)."""
    return np.array([((student[b][row == 1] - teacher[b][row == 1]) ** 2).mean() for b, row in enumerate(mask)])


def np_attention_mse(teacher, student, mask):
    """Per example: the mean of (s - t)^2 over every head's real (query, key) block."""
    means = []
    for b in range(mask.shape[0]):
        real = np.flatnonzero(mask[b])
        block = np.ix_(np.arange(teacher.shape[1]), real, real)
        means.append(((student[b][block] - teacher[b][block]) ** 2).mean())
    return np.array(means)


def test_hidden_mse_matches_numpy_and_ignores_padded_tokens():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
    loss = np.asarray(distill.hidden_mse(teacher, student, MASK))
    np.testing.assert_allclose(loss, np_hidden_mse(teacher, student, MASK), rtol=1e-6)
    # The 3 and 2 real tokens of width 4: the denominators are 12 and 8, not 12 and 12.
    np.testing.assert_allclose(loss, ((student - teacher) ** 2 * MASK[:, :, None]).sum((1, 2)) / [12, 8], rtol=1e-6)
    student_changed = student.copy()
    student_changed[1, 2] += 100.0
    teacher_changed = teacher.copy()
    teacher_changed[1, 2] = -50.0
    np.testing.assert_allclose(distill.hidden_mse(teacher_changed, student_changed, MASK), loss, rtol=1e-6)


def test_hidden_mse_is_float32_for_half_inputs_and_refuses_different_widths():
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(2, 2, 3, 4)).astype(np.float16)
    loss = distill.hidden_mse(teacher, student, MASK)
    assert str(loss.dtype) in ("float32", "<dtype: 'float32'>")
    np.testing.assert_allclose(loss, np_hidden_mse(teacher.astype(np.float32), student.astype(np.float32), MASK),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="width 4 != student width 8"):
        distill.hidden_mse(teacher, np.zeros((2, 3, 8), np.float32), MASK)


def test_attention_mse_matches_numpy_and_ignores_padded_queries_and_keys():
    rng = np.random.default_rng(2)
    teacher, student = rng.normal(size=(2, 2, 2, 3, 3)).astype(np.float32)  # B=2, heads=2, T=3
    bias = (1.0 - MASK[:, None, None, :]) * -10000.0  # as the encoder adds to padded keys
    teacher, student = teacher + bias, student + 0.5 * bias
    loss = np.asarray(distill.attention_mse(teacher, student, MASK))
    np.testing.assert_allclose(loss, np_attention_mse(teacher, student, MASK), rtol=1e-6)
    # 2 heads x 9 and 2 heads x 4 real pairs.
    valid = MASK[:, None, :, None] * MASK[:, None, None, :]
    np.testing.assert_allclose(loss, (valid * (student - teacher) ** 2).sum((1, 2, 3)) / [18, 8], rtol=1e-6)
    student_changed, teacher_changed = student.copy(), teacher.copy()
    student_changed[1, :, 2, :] = 7.0   # padded query row
    teacher_changed[1, :, :, 2] = 3.0   # padded key column
    np.testing.assert_allclose(distill.attention_mse(teacher_changed, student_changed, MASK), loss, rtol=1e-6)


def test_attention_mse_refuses_different_head_counts():
    with pytest.raises(ValueError, match="teacher has 2 heads, student 4"):
        distill.attention_mse(np.zeros((2, 2, 3, 3), np.float32), np.zeros((2, 4, 3, 3), np.float32), MASK)


def test_feature_losses_by_name_and_feature():
    assert distill.feature_loss("mse", "hidden") is distill.hidden_mse
    assert distill.feature_loss("mse", "embeddings") is distill.hidden_mse
    assert distill.feature_loss("mse", "attention") is distill.attention_mse
    with pytest.raises(ValueError, match=r"unknown feature loss 'cosine'; expected one of \('mse',\)"):
        distill.feature_loss("cosine", "hidden")
    with pytest.raises(ValueError, match="no version for feature 'logits'"):
        distill.feature_loss("mse", "logits")
