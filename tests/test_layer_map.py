"""Layer maps as data: rules, JSON files and their errors, student init from teacher layers,
projections and the intermediate loss terms on tiny encoders."""
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertdistill.models.bert import BertClassifier, BertEncoder, checkpoint_variables
from bertdistill.distill.layer_map import (FeatureProjections, LayerMapError, Match, copy_teacher_layers, describe,
                                   intermediate_loss_terms, resolve_layer_map, teacher_layers_for_init,
                                   write_layer_map)
from tests.bert_fixtures import tiny_batch, tiny_config


def layers(n):
    return tiny_config(num_hidden_layers=n)


# --- Rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, n, m, expected", [
    ("uniform", 6, 3, [2, 4, 6]), ("uniform", 6, 4, [2, 3, 5, 6]), ("uniform", 4, 2, [2, 4]),
    ("uniform", 5, 5, [1, 2, 3, 4, 5]), ("last", 6, 3, [4, 5, 6]), ("last", 4, 1, [4]),
    ("skip", 6, 3, [2, 4, 6]), ("skip", 7, 3, [2, 4, 6]), ("skip", 6, 4, [1, 2, 3, 4]),
])
def test_rules_map_student_layers_to_teacher_layers(rule, n, m, expected):
    matches = resolve_layer_map(rule, layers(n), layers(m))
    assert matches[0] == Match(0, 0, "embeddings", "mse", 1.0)
    assert matches[1:] == [Match(t, s, feature) for s, t in enumerate(expected, start=1)
                           for feature in ("hidden", "attention")]


@pytest.mark.parametrize("rule", ["uniform", "last", "skip"])
def test_rules_refuse_a_student_deeper_than_the_teacher(rule):
    with pytest.raises(LayerMapError, match="3-layer student and a 2-layer teacher"):
        resolve_layer_map(rule, layers(2), layers(3))


def test_a_rule_can_name_its_features():
    assert resolve_layer_map("uniform:hidden", layers(12), layers(6)) == [
        Match(t, s, "hidden") for s, t in enumerate([2, 4, 6, 8, 10, 12], start=1)]
    assert resolve_layer_map("last:attention+embeddings", layers(4), layers(2)) == [
        Match(0, 0, "embeddings"), Match(3, 1, "attention"), Match(4, 2, "attention")]
    # Without attention matches the head counts may differ.
    assert resolve_layer_map("skip:embeddings+hidden", layers(4), tiny_config(num_attention_heads=4)) == [
        Match(0, 0, "embeddings"), Match(2, 1, "hidden"), Match(4, 2, "hidden")]


@pytest.mark.parametrize("spec", ["uniform:", "uniform:hiden", "uniform:hidden+hidden", "skip:hidden,attention"])
def test_a_rule_with_unknown_features_is_refused(spec):
    with pytest.raises(LayerMapError, match=re.escape(f"layer map rule '{spec}': after '{spec.split(':')[0]}:' give "
                                                      "distinct features from ('embeddings', 'hidden', 'attention')")):
        resolve_layer_map(spec, layers(4), layers(2))


def test_unknown_rule_or_missing_file_is_refused(tmp_path):
    with pytest.raises(LayerMapError, match=r"'unifrom' is neither a rule .* nor an existing JSON file"):
        resolve_layer_map("unifrom", layers(4), layers(2))
    with pytest.raises(LayerMapError, match="neither a rule"):
        resolve_layer_map(str(tmp_path / "absent.json"), layers(4), layers(2))


def test_rules_refuse_attention_between_different_head_counts():
    with pytest.raises(LayerMapError, match=r"teacher has 2 heads and the student 4.*Drop the attention matches"):
        resolve_layer_map("uniform", layers(4), tiny_config(num_attention_heads=4))


# --- JSON files -------------------------------------------------------------------------------

def test_json_layer_map_round_trips_and_fills_defaults(tmp_path):
    teacher, student = layers(4), layers(2)
    matches = [Match(0, 0, "embeddings", weight=0.5), Match(3, 1, "hidden"), Match(4, 2, "hidden", weight=2.0),
               Match(4, 2, "attention")]
    path = tmp_path / "map.json"
    write_layer_map(matches, str(path))
    assert resolve_layer_map(str(path), teacher, student) == matches
    path.write_text(json.dumps([{"teacher_layer": 2, "student_layer": 1, "feature": "hidden"},
                                {"teacher_layer": 4, "student_layer": 2, "feature": "hidden", "weight": 3}]))
    assert resolve_layer_map(str(path), teacher, student) == [Match(2, 1, "hidden", "mse", 1.0),
                                                              Match(4, 2, "hidden", "mse", 3.0)]


def entry(**overrides):
    values = {"teacher_layer": 2, "student_layer": 1, "feature": "hidden"}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not DROP}


DROP = object()


@pytest.mark.parametrize("entries, message", [
    ([entry(), entry(teacher_layer=4, student_layer=2, bogus=1)], r"entry 1: unknown key\(s\) \['bogus'\]"),
    ([entry(feature=DROP)], "entry 0: missing key 'feature'"),
    ([entry(), entry(student_layer=DROP)], "entry 1: missing key 'student_layer'"),
    ([entry(teacher_layer=True)], "entry 0: key 'teacher_layer' must be an integer, got True"),
    ([entry(student_layer="1")], "entry 0: key 'student_layer' must be an integer"),
    ([entry(student_layer=1.0)], "entry 0: key 'student_layer' must be an integer"),
    ([entry(feature=1)], "entry 0: key 'feature' must be a string"),
    ([entry(feature="logits")], "entry 0: key 'feature' must be one of"),
    ([entry(loss="cosine")], r"entry 0: key 'loss' must be one of \('mse',\), got 'cosine'"),
    ([entry(loss=None)], "entry 0: key 'loss' must be a string"),
    ([entry(weight=False)], "entry 0: key 'weight' must be a number"),
    ([entry(weight="1")], "entry 0: key 'weight' must be a number"),
    ([entry(weight=-0.5)], "entry 0: key 'weight' must be a finite number >= 0"),
    ([entry(teacher_layer=0)], r"entry 0: key 'teacher_layer' must be in 1\.\.4 for feature 'hidden'"),
    ([entry(teacher_layer=5)], r"entry 0: key 'teacher_layer' must be in 1\.\.4"),
    ([entry(feature="attention", student_layer=3)], r"entry 0: key 'student_layer' must be in 1\.\.2 for feature 'attention'"),
    ([entry(feature="embeddings", teacher_layer=1, student_layer=0)], "entry 0: key 'teacher_layer' must be 0 for feature 'embeddings'"),
    ([entry(feature="embeddings", teacher_layer=0, student_layer=1)], "entry 0: key 'student_layer' must be 0"),
    ([entry(), entry(teacher_layer=4, student_layer=2), entry(weight=2.0)], r"entry 2: duplicate match hidden teacher 2 -> student 1 \(also entry 0\)"),
    ([entry(), [2, 1, "hidden"]], "entry 1: expected an object"),
    ([], "the layer map is empty"),
    ({"matches": []}, "expected a JSON list of matches, got dict"),
])
def test_json_layer_map_errors_name_the_file_entry_and_key(tmp_path, entries, message):
    path = tmp_path / "my_map.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(LayerMapError, match=r"my_map\.json: " + message):
        resolve_layer_map(str(path), layers(4), layers(2))


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "my_map.json"
    path.write_text('[\n {"teacher_layer": 2, "student_layer": 1, "feature": "hidden"},\n oops\n]')
    with pytest.raises(LayerMapError, match=r"my_map\.json:3: invalid JSON"):
        resolve_layer_map(str(path), layers(4), layers(2))


def test_json_attention_matches_need_equal_head_counts(tmp_path):
    teacher, student = layers(4), tiny_config(num_attention_heads=4)
    path = tmp_path / "map.json"
    write_layer_map([Match(0, 0, "embeddings"), Match(4, 2, "hidden"), Match(4, 2, "attention")], str(path))
    with pytest.raises(LayerMapError, match=r"map\.json: attention matches \(entries \[2\]\).* 2 heads .* student 4"):
        resolve_layer_map(str(path), teacher, student)
    write_layer_map([Match(0, 0, "embeddings"), Match(4, 2, "hidden")], str(path))
    assert len(resolve_layer_map(str(path), teacher, student)) == 2


# --- Student initialisation -------------------------------------------------------------------

def test_teacher_layers_for_init_follow_hidden_matches_else_uniform():
    teacher, student = tiny_config(num_hidden_layers=6), tiny_config(num_hidden_layers=3)
    assert teacher_layers_for_init(resolve_layer_map("last", teacher, student), teacher, student) == [4, 5, 6]
    # Student layer 1 has only an attention match, layer 3 nothing: both fall back to uniform (2, _, 6).
    matches = [Match(0, 0, "embeddings"), Match(5, 1, "attention"), Match(3, 2, "hidden"), Match(5, 2, "hidden")]
    assert teacher_layers_for_init(matches, teacher, student) == [2, 3, 6]


def encoders(teacher_layers=4, **student_overrides):
    keras.utils.set_random_seed(0)
    teacher = BertEncoder(tiny_config(num_hidden_layers=teacher_layers), output_hidden_states=True,
                          output_attentions=True)
    student = BertEncoder(tiny_config(**student_overrides), output_hidden_states=True, output_attentions=True)
    return teacher, student


def test_copy_teacher_layers_copies_embeddings_pooler_and_the_chosen_layers():
    teacher, student = encoders(4)
    classifier = BertClassifier(student, num_labels=2)
    head_before = classifier.head.kernel.numpy().copy()
    t_vars, s_vars = checkpoint_variables(teacher), checkpoint_variables(student)
    assert not np.allclose(s_vars["bert/encoder/layer_0/attention/self/query/kernel"].numpy(),
                           t_vars["bert/encoder/layer_2/attention/self/query/kernel"].numpy())

    copy_teacher_layers(teacher, student, [3, 1])  # student layer 1 <- teacher 3, 2 <- teacher 1

    for t_layer, s_layer in ((teacher.transformer_layers[2], student.transformer_layers[0]),
                             (teacher.transformer_layers[0], student.transformer_layers[1])):
        assert len(s_layer.weights) == len(t_layer.weights) == 16
        for t_var, s_var in zip(t_layer.weights, s_layer.weights):
            assert t_var.path.split("/", 1)[1] == s_var.path.split("/", 1)[1]
            np.testing.assert_array_equal(s_var.numpy(), t_var.numpy())
    for t_var, s_var in zip(teacher.embeddings.weights + teacher.pooler.weights,
                            student.embeddings.weights + student.pooler.weights):
        np.testing.assert_array_equal(s_var.numpy(), t_var.numpy())
    # Every encoder weight was copied; the classifier head was not touched.
    assert len(student.weights) == len(checkpoint_variables(student))
    np.testing.assert_array_equal(classifier.head.kernel.numpy(), head_before)
    # Copies, not shared variables.
    teacher.transformer_layers[2].query.kernel.assign(np.zeros((8, 8), np.float32))
    assert np.abs(student.transformer_layers[0].query.kernel.numpy()).sum() > 0


def test_a_student_made_of_the_first_teacher_layers_computes_the_same_hidden_states():
    teacher, student = encoders(4)
    copy_teacher_layers(teacher, student, [1, 2])
    batch = tiny_batch()
    t_out, s_out = teacher(batch), student(batch)
    for i in range(3):
        np.testing.assert_allclose(s_out["hidden_states"][i].numpy(), t_out["hidden_states"][i].numpy(), atol=1e-6)
    np.testing.assert_allclose(s_out["attention_scores"][1].numpy(), t_out["attention_scores"][1].numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def read_only_pair():
    """A 4-layer teacher and a 2-layer student for tests that must not change them."""
    return encoders(4)


@pytest.mark.parametrize("overrides, message", [
    ({"hidden_size": 4, "intermediate_size": 12}, r"hidden_size 8 \(teacher\) vs 4 \(student\); intermediate_size 16 "
                                                  r"\(teacher\) vs 12 \(student\).*student_init=random"),
    ({"num_attention_heads": 4}, r"num_attention_heads 2 \(teacher\) vs 4 \(student\)"),
    ({"vocab_size": 30}, r"vocab_size 20 \(teacher\) vs 30"),
])
def test_copy_teacher_layers_refuses_different_sizes(read_only_pair, overrides, message):
    student = BertEncoder(tiny_config(**overrides))
    with pytest.raises(LayerMapError, match=message):
        copy_teacher_layers(read_only_pair[0], student, [2, 4])


@pytest.mark.parametrize("teacher_layers, message", [([2], "1 entries for a 2-layer student"),
                                                     ([0, 4], r"teacher_layers\[0\] must be a teacher layer in 1\.\.4"),
                                                     ([2, 5], r"teacher_layers\[1\]")])
def test_copy_teacher_layers_refuses_bad_layer_lists(read_only_pair, teacher_layers, message):
    with pytest.raises(LayerMapError, match=message):
        copy_teacher_layers(*read_only_pair, teacher_layers)


# --- Description, projections, loss terms -----------------------------------------------------

def test_describe_has_one_row_per_match_with_shapes_and_projections():
    teacher = tiny_config(num_hidden_layers=4, hidden_size=12, num_attention_heads=2)
    student = tiny_config(hidden_size=8, num_attention_heads=2)
    matches = resolve_layer_map("uniform", teacher, student)
    lines = describe(matches, teacher, student).splitlines()
    assert len(lines) == 1 + len(matches)
    assert lines[0].split() == ["teacher", "student", "feature", "teacher", "shape", "student", "shape",
                                "projection", "loss", "weight"]
    rows = [line.split() for line in lines[1:]]
    assert " ".join(rows[0]) == "0 0 embeddings [B, T, 12] [B, T, 8] dense 8->12 mse 1"
    assert " ".join(rows[3]) == "4 2 hidden [B, T, 12] [B, T, 8] dense 8->12 mse 1"
    assert " ".join(rows[4]) == "4 2 attention [B, 2, T, T] [B, 2, T, T] none mse 1"
    same_width = describe([Match(2, 1, "hidden", weight=0.25)], layers(4), layers(2)).splitlines()[1].split()
    assert same_width[-3:] == ["none", "mse", "0.25"]


def test_projections_exist_only_for_embeddings_and_hidden_matches_between_widths():
    teacher, student = layers(4), tiny_config(hidden_size=4, intermediate_size=8)
    matches = resolve_layer_map("uniform", teacher, student)
    projections = FeatureProjections(matches, teacher, student)
    kernels = {w.path: tuple(w.shape) for w in projections.weights}
    assert kernels == {f"projection_{key}/{name}": shape for key in ("embeddings_0_0", "hidden_2_1", "hidden_4_2")
                       for name, shape in (("kernel", (4, 8)), ("bias", (8,)))}
    assert len(projections.trainable_weights) == 6
    x = np.ones((2, 3, 4), np.float32)
    assert tuple(projections.project(matches[3], x).shape) == (2, 3, 8)
    assert tuple(projections.project(3, x).shape) == (2, 3, 8)
    scores = np.ones((2, 2, 3, 3), np.float32)
    assert projections.project(matches[2], scores) is scores
    assert FeatureProjections(matches, teacher, layers(2)).weights == []
    only_hidden = [Match(4, 2, "hidden")]
    assert [w.path for w in FeatureProjections(only_hidden, teacher, student).weights] == [
        "projection_hidden_4_2/kernel", "projection_hidden_4_2/bias"]


def np_masked_mse(t, s, mask):
    """Per example: the mean of (s - t)^2 over its real tokens."""
    return np.array([((s[b][row == 1] - t[b][row == 1]) ** 2).mean() for b, row in enumerate(mask)])


def test_intermediate_loss_terms_on_tiny_encoders():
    keras.utils.set_random_seed(0)
    teacher_config, student_config = layers(4), tiny_config(hidden_size=4, intermediate_size=8)
    teacher = BertEncoder(teacher_config, output_hidden_states=True, output_attentions=True)
    student = BertEncoder(student_config, output_hidden_states=True, output_attentions=True)
    matches = resolve_layer_map("uniform", teacher_config, student_config)
    matches[3] = Match(4, 2, "hidden", weight=0.5)
    projections = FeatureProjections(matches, teacher_config, student_config)
    batch = tiny_batch()
    t_out, s_out = teacher(batch), student(batch)
    terms = intermediate_loss_terms(matches, t_out, s_out, batch["attention_mask"], projections)
    assert list(terms) == ["embeddings_0_0", "hidden_2_1", "attention_2_1", "hidden_4_2", "attention_4_2"]
    for value in terms.values():
        assert value.shape == (2,) and str(value.dtype) in ("float32", "<dtype: 'float32'>")
        assert np.all(np.isfinite(value)) and np.all(np.asarray(value) > 0)
    dense = projections.dense["hidden_4_2"]
    projected = s_out["hidden_states"][2].numpy() @ dense.kernel.numpy() + dense.bias.numpy()
    expected = 0.5 * np_masked_mse(t_out["hidden_states"][4].numpy(), projected, batch["attention_mask"])
    np.testing.assert_allclose(terms["hidden_4_2"], expected, rtol=1e-5)
    mask = batch["attention_mask"]
    t_scores, s_scores = t_out["attention_scores"][1].numpy(), s_out["attention_scores"][0].numpy()
    real = [np.flatnonzero(row) for row in mask]
    means = [((s_scores[b][:, r][:, :, r] - t_scores[b][:, r][:, :, r]) ** 2).mean() for b, r in enumerate(real)]
    np.testing.assert_allclose(terms["attention_2_1"], means, rtol=1e-5)
    # Gradients reach the student and the projections, never the teacher.
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(list(intermediate_loss_terms(matches, teacher(batch), student(batch), mask,
                                                           projections).values()))
    student_vars = [v for v in student.trainable_variables if not v.path.startswith("pooler/")]  # not in these losses
    variables = student_vars + projections.trainable_variables + teacher.trainable_variables[:1]
    grads = tape.gradient(total, variables)
    assert all(g is not None for g in grads[:-1]) and grads[-1] is None
    assert np.abs(grads[len(student_vars)].numpy()).sum() > 0  # the first projection kernel


def test_intermediate_loss_terms_need_projections_and_the_right_outputs():
    keras.utils.set_random_seed(0)
    teacher_config, student_config = layers(4), tiny_config(hidden_size=4, intermediate_size=8)
    teacher = BertEncoder(teacher_config, output_hidden_states=True, output_attentions=True)
    student = BertEncoder(student_config, output_hidden_states=True)
    batch = tiny_batch()
    t_out, s_out = teacher(batch), student(batch)
    with pytest.raises(ValueError, match="pass FeatureProjections"):
        intermediate_loss_terms([Match(2, 1, "hidden")], t_out, s_out, batch["attention_mask"])
    with pytest.raises(ValueError, match="student outputs have no 'attention_scores'.*output_attentions=True"):
        intermediate_loss_terms([Match(2, 1, "attention")], t_out, s_out, batch["attention_mask"])
