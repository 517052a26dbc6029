"""Our TinyBERT losses against the reference code's formulas (huawei-noah/Pretrained-Language-Model,
TinyBERT/task_distill.py), written here in NumPy as the reference writes them, on tiny random
tensors with a padded batch. The conversion factors are those of docs/losses.md:

- soft cross-entropy: ours == C * T^2 * reference (C classes, T the temperature);
- hidden-state and attention MSE: ours (averaged over the batch, as the trainer does) == reference
  on a batch without padding; with padding, each example's loss == the reference on that example's
  real tokens alone, and the batch's loss != the reference on the padded batch.
"""
import numpy as np
import pytest

from bertdistill.distill import distill, tinybert

# --- The reference, in NumPy -------------------------------------------------------------------
# torch.nn.functional.log_softmax / softmax over the last axis, and torch.nn.MSELoss() (reduction
# "mean": the mean over every element of the tensors).


def ref_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ref_soft_cross_entropy(predicts, targets):
    """task_distill.py: `(- targets_prob * student_likelihood).mean()`."""
    student_likelihood = ref_log_softmax(predicts)
    targets_prob = np.exp(ref_log_softmax(targets))
    return (- targets_prob * student_likelihood).mean()


def ref_stage2_loss(student_logits, teacher_logits, temperature):
    """task_distill.py: `soft_cross_entropy(student_logits / args.temperature, teacher_logits / args.temperature)`."""
    return ref_soft_cross_entropy(student_logits / temperature, teacher_logits / temperature)


def ref_loss_mse(a, b):
    """`MSELoss()(a, b)`: the mean of the squared differences over all elements."""
    return ((a - b) ** 2).mean()


def ref_att_loss(student_att, teacher_att):
    """task_distill.py: scores <= -1e2 (masked keys) set to 0 in both models, then `loss_mse`."""
    student_att = np.where(student_att <= -1e2, np.zeros_like(student_att), student_att)
    teacher_att = np.where(teacher_att <= -1e2, np.zeros_like(teacher_att), teacher_att)
    return ref_loss_mse(student_att, teacher_att)


# --- Tiny tensors ------------------------------------------------------------------------------

B, T, H, HEADS = 3, 4, 5, 2
PADDED = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], np.int32)  # 4, 3 and 2 real tokens
FULL = np.ones((B, T), np.int32)


def hidden_states(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, T, H)).astype(np.float32), rng.normal(size=(B, T, H)).astype(np.float32)


def attention_scores(seed, mask):
    """Scores before softmax as both encoders return them: raw scores plus -10000 on padded keys
    (TinyBERT's `extended_attention_mask`, our `_MASK_BIAS`), [B, heads, T(query), T(key)]."""
    rng = np.random.default_rng(seed)
    bias = (1.0 - mask[:, None, None, :]) * -10000.0
    teacher, student = rng.normal(size=(2, B, HEADS, T, T))
    return (teacher + bias).astype(np.float32), (student + bias).astype(np.float32)


def batch_loss(per_example) -> float:
    """The trainer's reduction of a per-example loss [B]: the sum over examples / the example count."""
    per_example = np.asarray(per_example, np.float64)
    assert per_example.shape == (B,)
    return float(per_example.sum() / B)


# --- Soft cross-entropy (stage 2) ------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_cross_entropy_is_c_t_squared_times_the_reference(classes, temperature):
    rng = np.random.default_rng(classes)
    teacher = (3 * rng.normal(size=(B, classes))).astype(np.float32)
    student = rng.normal(size=(B, classes)).astype(np.float32)
    reference = ref_stage2_loss(student, teacher, temperature)
    ours = float(distill.soft_cross_entropy(teacher, student, temperature))
    np.testing.assert_allclose(ours, classes * temperature ** 2 * reference, rtol=1e-5)
    # What stage 2 trains on: PredictionTask's term (no hard labels) is the same value.
    task = tinybert.PredictionTask(lambda x, training: x, None, temperature=temperature)
    term = task.loss_terms(student, {"teacher_logits": teacher, "label_ids": np.zeros(B, np.int32)})
    np.testing.assert_allclose(float(term["soft_cross_entropy"]), classes * temperature ** 2 * reference, rtol=1e-5)


def test_soft_cross_entropy_per_example_is_the_cross_entropy_of_the_two_distributions():
    """Why C: ours sums over classes (a true cross-entropy, on the scale of the hard-label loss),
    the reference averages over classes too. With a one-hot teacher ours is the hard-label loss."""
    student = np.array([[2.0, -1.0, 0.5]], np.float32)
    one_hot_teacher = np.array([[0.0, 0.0, 60.0]], np.float32)  # softmax: (0, 0, 1) in float32
    hard = float(distill.hard_cross_entropy(np.array([2]), student))
    np.testing.assert_allclose(float(distill.soft_cross_entropy(one_hot_teacher, student)), hard, rtol=1e-5)
    np.testing.assert_allclose(ref_stage2_loss(student, one_hot_teacher, 1.0), hard / 3, rtol=1e-5)


# --- Hidden states (and the embedding output) ---------------------------------------------------


def test_hidden_mse_equals_the_reference_without_padding():
    teacher, student = hidden_states(0)
    ours = batch_loss(distill.hidden_mse(teacher, student, FULL))
    np.testing.assert_allclose(ours, ref_loss_mse(student, teacher), rtol=1e-5)


def test_hidden_mse_with_padding_is_the_reference_on_real_tokens_only():
    teacher, student = hidden_states(1)
    student[PADDED == 0] += 10.0  # what the models compute at padded positions is arbitrary
    per_example = np.asarray(distill.hidden_mse(teacher, student, PADDED))
    real = PADDED.sum(1)
    on_real_tokens = [ref_loss_mse(student[b, :real[b]], teacher[b, :real[b]]) for b in range(B)]
    np.testing.assert_allclose(per_example, on_real_tokens, rtol=1e-5)
    padded_reference = ref_loss_mse(student, teacher)  # also counts the 3 padded positions
    assert padded_reference > 2 * batch_loss(per_example)

    # The denominators: where padded positions agree (no contribution), the reference divides each
    # example's sum by T * H instead of real_tokens * H: reference == mean_b(real_b / T * ours_b).
    agreeing = student.copy()
    agreeing[PADDED == 0] = teacher[PADDED == 0]
    per_example = np.asarray(distill.hidden_mse(teacher, agreeing, PADDED))
    np.testing.assert_allclose(ref_loss_mse(agreeing, teacher), np.mean(real / T * per_example), rtol=1e-5)


# --- Attention scores before softmax --------------------------------------------------------------


def test_attention_mse_equals_the_reference_without_padding():
    teacher, student = attention_scores(2, FULL)
    ours = batch_loss(distill.attention_mse(teacher, student, FULL))
    np.testing.assert_allclose(ours, ref_att_loss(student, teacher), rtol=1e-5)


def test_attention_mse_with_padding_is_the_reference_on_real_tokens_only():
    teacher, student = attention_scores(3, PADDED)
    per_example = np.asarray(distill.attention_mse(teacher, student, PADDED))
    real = PADDED.sum(1)
    on_real_tokens = [ref_att_loss(student[b, :, :real[b], :real[b]], teacher[b, :, :real[b], :real[b]])
                      for b in range(B)]
    np.testing.assert_allclose(per_example, on_real_tokens, rtol=1e-5)
    padded_reference = ref_att_loss(student, teacher)
    assert not np.isclose(batch_loss(per_example), padded_reference, rtol=0.05)

    # What the reference adds with padding: masked keys (<= -1e2) become 0 in both models, so they
    # count in the mean as zeros; padded queries are not masked at all, their rows over real keys count.
    difference = (student - teacher) ** 2
    real_block = sum(difference[b, :, :real[b], :real[b]].sum() for b in range(B))
    padded_queries = sum(difference[b, :, real[b]:, :real[b]].sum() for b in range(B))
    np.testing.assert_allclose(padded_reference, (real_block + padded_queries) / (B * HEADS * T * T), rtol=1e-5)
    np.testing.assert_allclose(real_block, np.sum(per_example * HEADS * real ** 2), rtol=1e-5)


def test_the_reference_zeroes_any_score_at_or_below_minus_100_ours_only_masked_ones():
    """The reference finds masked scores by value (<= -1e2); ours by the attention mask. A real
    score that low (rare) is dropped by the reference, kept by ours."""
    teacher, student = attention_scores(4, FULL)
    teacher[0, 1, 2, 3] = -150.0  # a real (unmasked) key with a very negative score
    ours = batch_loss(distill.attention_mse(teacher, student, FULL))
    kept = ref_loss_mse(student, teacher)
    np.testing.assert_allclose(ours, kept, rtol=1e-5)
    dropped = ref_att_loss(student, teacher)
    np.testing.assert_allclose(kept - dropped, ((student[0, 1, 2, 3] + 150.0) ** 2 - student[0, 1, 2, 3] ** 2)
                               / (B * HEADS * T * T), rtol=1e-4)
