"""Distillation losses against NumPy, and the stored-logits distiller training a tiny student."""
import keras
import numpy as np
import pytest

from bertdistill import distill

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


@pytest.mark.parametrize("loss", ["mse", "kd"])
def test_distiller_moves_the_student_toward_the_teacher(loss):
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller = distill.LogitsDistiller(student, loss, temperature=2.0, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    teacher = x @ np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    y = {"label_ids": teacher.argmax(1).astype(np.int32), "teacher_logits": teacher}
    before = float(distill.logits_mse(teacher, student(x)))
    history = distiller.fit(x, y, batch_size=16, epochs=20, verbose=0)
    assert float(distill.logits_mse(teacher, student(x))) < before / 2
    assert {"loss", "accuracy", *distill.LOSS_TERMS[loss]} <= set(history.history)
    assert history.history["accuracy"][-1] > 0.8
    # Plain labels (a dev set without teacher logits) are scored with the hard cross-entropy.
    results = distiller.evaluate(x, y["label_ids"], verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    expected = -np_log_softmax(student(x).numpy())[np.arange(64), y["label_ids"]].mean()
    np.testing.assert_allclose(results["loss"], expected, rtol=1e-4)
