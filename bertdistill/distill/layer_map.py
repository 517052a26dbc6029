"""TinyBERT's intermediate-layer distillation declared as data: which teacher layer meets which
student layer, on which feature, with which loss and weight.

Layer numbering (the same on both sides, teacher with N layers, student with M):

- `embeddings`: layer 0 on both sides, the embedding output `hidden_states[0]` [B, T, H];
- `hidden` layer l (1..L): the output of transformer layer l, `hidden_states[l]` [B, T, H];
- `attention` layer l (1..L): the scores before softmax of transformer layer l,
  `attention_scores[l - 1]` [B, heads, T, T].

A layer map is a rule name or a JSON file. Rules (each gives the embeddings match 0 <- 0 and a
hidden and an attention match per student layer, loss "mse", weight 1; they need M <= N):

- `uniform`: student m <- teacher ceil(m * N / M) (6 -> 3: 2, 4, 6; 6 -> 4: 2, 3, 5, 6); the top
  student layer always meets the top teacher layer. TinyBERT's m * N / M when M divides N.
- `last`: student m <- teacher N - M + m (the top M layers).
- `skip`: student m <- teacher m * (N // M).

A rule may name the features it matches after a colon, joined by `+`: `uniform:hidden` gives the
hidden matches alone (12 -> 6: teacher 2, 4, ..., 12 to student 1..6), `uniform:embeddings+hidden`
drops the attention matches (what a student whose heads differ from the teacher's needs).

A JSON file holds a list of `{"teacher_layer", "student_layer", "feature", "loss" (default
"mse"), "weight" (default 1.0)}`. Errors name the file, the entry index and the key.

Attention matches need equal head counts (the loss averages over heads). Hidden and embeddings
matches between different widths go through a trainable projection per match
(`FeatureProjections`: separate W_e and W_h as in the paper, not the reference code's one shared
`fit_dense`); the projections are training-only weights and never part of the exported student.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import keras
from keras import ops

from bertdistill.models.bert import PACKAGE, BertConfig, BertEncoder, checkpoint_variables
from bertdistill.distill.distill import FEATURE_LOSSES, feature_loss
from bertdistill.errors import ConfigError, field
from bertdistill.files import atomic_output

FEATURES = ("embeddings", "hidden", "attention")
RULES = ("uniform", "last", "skip")
_KEYS = ("teacher_layer", "student_layer", "feature", "loss", "weight")
_REQUIRED_KEYS = ("teacher_layer", "student_layer", "feature")


class LayerMapError(ConfigError):
    """An invalid layer map, or encoders whose sizes do not allow what the map asks (a user error)."""


@dataclasses.dataclass(frozen=True)
class Match:
    """One intermediate-layer term: teacher layer -> student layer on `feature` (numbering in the
    module docstring), compared with the feature loss `loss` and scaled by `weight`."""

    teacher_layer: int
    student_layer: int
    feature: str  # "embeddings" | "hidden" | "attention"
    loss: str = "mse"
    weight: float = 1.0

    @property
    def key(self) -> str:
        """The loss term's name: `feature_teacher_student`, e.g. `hidden_4_2`."""
        return f"{self.feature}_{self.teacher_layer}_{self.student_layer}"


# ---------------------------------------------------------------------------------------------
# Rules and resolution


def rule_teacher_layers(rule: str, num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """The teacher layer (1-based) that student layers 1..M meet under `rule`."""
    n, m = num_teacher_layers, num_student_layers
    if rule not in RULES:
        raise LayerMapError(f"unknown layer map rule {rule!r}; expected one of {RULES}")
    if not 1 <= m <= n:
        raise LayerMapError(f"layer map rule {rule!r} needs 1 <= student layers <= teacher layers; "
                            f"got a {m}-layer student and a {n}-layer teacher")
    if rule == "uniform":
        return [-(-s * n // m) for s in range(1, m + 1)]
    if rule == "last":
        return [n - m + s for s in range(1, m + 1)]
    return [s * (n // m) for s in range(1, m + 1)]


def rule_matches(rule: str, teacher: BertConfig, student: BertConfig,
                 features: Sequence[str] = FEATURES) -> list[Match]:
    """The embeddings match, then a hidden and an attention match per student layer, each only if
    its feature is in `features`."""
    layers = rule_teacher_layers(rule, teacher.num_hidden_layers, student.num_hidden_layers)
    matches = [Match(0, 0, "embeddings")] if "embeddings" in features else []
    for s, t in enumerate(layers, start=1):
        matches += [Match(t, s, feature) for feature in ("hidden", "attention") if feature in features]
    return matches


def parse_rule(spec: str) -> tuple[str, tuple[str, ...]] | None:
    """`uniform` -> ("uniform", FEATURES); `uniform:hidden+attention` -> ("uniform", ("hidden",
    "attention")); None when `spec` is no rule (a JSON file's path)."""
    rule, colon, named = spec.partition(":")
    if rule not in RULES:
        return None
    if not colon:
        return rule, FEATURES
    features = tuple(named.split("+"))
    unknown = [feature for feature in features if feature not in FEATURES]
    if unknown or len(set(features)) != len(features):
        raise LayerMapError(f"layer map rule {spec!r}: after {rule + ':'!r} give distinct features from {FEATURES} "
                            f"joined by '+' (e.g. {rule}:hidden), got {named!r}")
    return rule, features


def resolve_layer_map(spec: str, teacher: BertConfig, student: BertConfig) -> list[Match]:
    """`spec` is a rule (`uniform`, `last`, `skip`, optionally `:features`) or the path of a JSON
    layer map. Returns validated matches; raises LayerMapError naming what is wrong."""
    rule = parse_rule(spec)
    if rule is None:
        return read_layer_map(spec, teacher, student)
    name, features = rule
    matches = rule_matches(name, teacher, student, features)
    validate_matches(matches, teacher, student, source=f"layer map rule {spec!r}")
    return matches


def layer_map_file(spec: str) -> str | None:
    """The JSON file `spec` names, None for a rule."""
    return None if parse_rule(spec) is not None else spec


def check_layer_map_spec(spec: str) -> None:
    """What can be checked of `--layer_map` before any model is loaded: a rule's features, or a
    JSON file's entries (their layer ranges need the models: `resolve_layer_map`)."""
    if parse_rule(spec) is None:
        read_entries(spec)


def read_entries(path: str) -> list[Match]:
    """The matches of a JSON layer map, each entry's keys and types checked."""
    if not os.path.isfile(path):
        raise LayerMapError(f"layer map {path!r} is neither a rule {RULES} (optionally :features, e.g. "
                            "uniform:hidden) nor an existing JSON file")
    with open(path, encoding="utf-8") as f:
        try:
            entries = json.load(f)
        except json.JSONDecodeError as e:
            raise LayerMapError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(entries, list):
        raise LayerMapError(f"{path}: expected a JSON list of matches, got {type(entries).__name__}")
    if not entries:
        raise LayerMapError(f"{path}: the layer map is empty; give at least one match")
    return [_parse_entry(entry, f"{path}: entry {i}") for i, entry in enumerate(entries)]


def read_layer_map(path: str, teacher: BertConfig, student: BertConfig) -> list[Match]:
    """Reads and validates a JSON layer map (see the module docstring)."""
    matches = read_entries(path)
    validate_matches(matches, teacher, student, source=path)
    return matches


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(entry, where: str) -> Match:
    if not isinstance(entry, dict):
        raise LayerMapError(f"{where}: expected an object with keys {_KEYS}, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise LayerMapError(f"{where}: unknown key(s) {unknown}; known keys are {_KEYS}")
    for key in _REQUIRED_KEYS:
        if key not in entry:
            raise LayerMapError(f"{where}: missing key {key!r}")
    for key in ("teacher_layer", "student_layer"):
        if not _is_int(entry[key]):
            raise LayerMapError(f"{where}: key {key!r} must be an integer, got {entry[key]!r}")
    for key in ("feature", "loss"):
        if key in entry and not isinstance(entry[key], str):
            raise LayerMapError(f"{where}: key {key!r} must be a string, got {entry[key]!r}")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise LayerMapError(f"{where}: key 'weight' must be a number, got {weight!r}")
    return Match(entry["teacher_layer"], entry["student_layer"], entry["feature"],
                 entry.get("loss", "mse"), float(weight))


def validate_matches(matches: Sequence[Match], teacher: BertConfig, student: BertConfig,
                     source: str = "layer map") -> None:
    """Checks features, losses, layer ranges, weights, duplicates and head counts."""
    if not matches:
        raise LayerMapError(f"{source}: the layer map is empty; give at least one match")
    n, m = teacher.num_hidden_layers, student.num_hidden_layers
    seen: dict[str, int] = {}
    for i, match in enumerate(matches):
        where = f"{source}: entry {i}"
        if match.feature not in FEATURES:
            raise LayerMapError(f"{where}: key 'feature' must be one of {FEATURES}, got {match.feature!r}")
        if match.loss not in FEATURE_LOSSES:
            raise LayerMapError(f"{where}: key 'loss' must be one of {tuple(FEATURE_LOSSES)}, got {match.loss!r}")
        if match.feature == "embeddings":
            for key, value in (("teacher_layer", match.teacher_layer), ("student_layer", match.student_layer)):
                if value != 0:
                    raise LayerMapError(f"{where}: key {key!r} must be 0 for feature 'embeddings', got {value}")
        else:
            for key, value, top in (("teacher_layer", match.teacher_layer, n),
                                    ("student_layer", match.student_layer, m)):
                if not 1 <= value <= top:
                    side = key.split("_")[0]
                    raise LayerMapError(f"{where}: key {key!r} must be in 1..{top} for feature {match.feature!r} "
                                        f"(the {side} has {top} layers; 0 is the embeddings), got {value}")
        if not math.isfinite(match.weight) or match.weight < 0:
            raise LayerMapError(f"{where}: key 'weight' must be a finite number >= 0, got {match.weight}")
        if match.key in seen:
            raise LayerMapError(f"{where}: duplicate match {match.feature} teacher {match.teacher_layer} -> "
                                f"student {match.student_layer} (also entry {seen[match.key]})")
        seen[match.key] = i
    attention = [i for i, match in enumerate(matches) if match.feature == "attention"]
    if attention and teacher.num_attention_heads != student.num_attention_heads:
        raise LayerMapError(
            f"{source}: attention matches (entries {attention}) need equal head counts, but the teacher has "
            f"{teacher.num_attention_heads} heads and the student {student.num_attention_heads}: TinyBERT's "
            "attention loss averages over heads. Drop the attention matches (--layer_map=uniform:embeddings+hidden "
            "or a JSON layer map without them) or give the student the teacher's head count.")


LAYER_MAP_FILE = "layer_map.json"  # the resolved map a run records beside its student


def layer_map_to_json(matches: Sequence[Match]) -> list[dict]:
    """The matches as the JSON file format (read back by `resolve_layer_map`)."""
    return [dataclasses.asdict(match) for match in matches]


def write_layer_map(matches: Sequence[Match], path: str) -> None:
    """Writes the matches as a JSON layer map (e.g. to record the resolved map of a run), atomically."""
    with atomic_output(path) as f:
        json.dump(layer_map_to_json(matches), f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# Student initialisation from teacher layers


def teacher_layers_for_init(matches: Sequence[Match], teacher: BertConfig, student: BertConfig) -> list[int]:
    """The teacher layer (1-based) each student layer 1..M starts from under
    `--student_init=teacher_layers`: the first hidden match of that student layer, else the
    `uniform` rule's layer (so 6 -> 3 gives 2, 4, 6)."""
    n, m = teacher.num_hidden_layers, student.num_hidden_layers
    from_hidden: dict[int, int] = {}
    for match in matches:
        if match.feature == "hidden" and match.student_layer not in from_hidden:
            from_hidden[match.student_layer] = match.teacher_layer
    fallback = rule_teacher_layers("uniform", n, m) if m <= n else [min(s, n) for s in range(1, m + 1)]
    return [from_hidden.get(s, fallback[s - 1]) for s in range(1, m + 1)]


# What a student must share with the teacher to start from its layers (--student_init=teacher_layers).
INIT_SIZES = ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size",
              "max_position_embeddings", "type_vocab_size")


def check_init_from_teacher(teacher: BertConfig, student: BertConfig) -> None:
    """Raises `LayerMapError` unless the student's sizes let it start from the teacher's layers
    (`--student_init=teacher_layers`): checked before any work, `--dry_run` included."""
    if teacher.model_type != student.model_type:
        raise LayerMapError(f"cannot initialise a {student.family_name} student from {teacher.family_name} "
                            f"teacher layers (other embeddings and attention); use {field('student_init')}=random or "
                            f"{field('student_model')}")
    differ = [f"{name} {getattr(teacher, name)} (teacher) vs {getattr(student, name)} (student)"
              for name in INIT_SIZES if getattr(teacher, name) != getattr(student, name)]
    if differ:
        raise LayerMapError(f"{field('student_init')}=teacher_layers cannot initialise the student from teacher "
                            "layers: " + "; ".join(differ) + ". Give the student the teacher's sizes, or pass "
                            f"{field('student_init')}=random for a narrower student.")


def copy_teacher_layers(teacher_encoder: BertEncoder, student_encoder: BertEncoder,
                        teacher_layers: Sequence[int]) -> None:
    """Copies the teacher's embeddings (three tables + LayerNorm) and pooler into the student,
    and teacher transformer layer `teacher_layers[i]` (1-based) into student layer i + 1 (all its
    weights). The student's values are copies: training it leaves the teacher alone."""
    t_config, s_config = teacher_encoder.config, student_encoder.config
    check_init_from_teacher(t_config, s_config)
    m, n = s_config.num_hidden_layers, t_config.num_hidden_layers
    if len(teacher_layers) != m:
        raise LayerMapError(f"teacher_layers has {len(teacher_layers)} entries for a {m}-layer student")
    for i, layer in enumerate(teacher_layers):
        if not _is_int(layer) or not 1 <= layer <= n:
            raise LayerMapError(f"teacher_layers[{i}] must be a teacher layer in 1..{n}, got {layer!r}")
    source, target = checkpoint_variables(teacher_encoder), checkpoint_variables(student_encoder)
    for name, variable in target.items():
        if name.startswith("bert/encoder/layer_"):
            student_index, rest = name[len("bert/encoder/layer_"):].split("/", 1)
            name = f"bert/encoder/layer_{teacher_layers[int(student_index)] - 1}/{rest}"
        variable.assign(ops.convert_to_tensor(source[name]))


# ---------------------------------------------------------------------------------------------
# Description (--dry_run)


def _shape(feature: str, config: BertConfig) -> str:
    if feature == "attention":
        return f"[B, {config.num_attention_heads}, T, T]"
    return f"[B, T, {config.hidden_size}]"


def _projection(feature: str, teacher: BertConfig, student: BertConfig) -> str:
    if feature == "attention" or teacher.hidden_size == student.hidden_size:
        return "none"
    return f"dense {student.hidden_size}->{teacher.hidden_size}"


def describe(matches: Sequence[Match], teacher: BertConfig, student: BertConfig) -> str:
    """A plain-text table, one row per match: layers, feature, shapes, projection, loss, weight."""
    header = ("teacher", "student", "feature", "teacher shape", "student shape", "projection", "loss", "weight")
    rows = [(str(m.teacher_layer), str(m.student_layer), m.feature, _shape(m.feature, teacher),
             _shape(m.feature, student), _projection(m.feature, teacher, student), m.loss, f"{m.weight:g}")
            for m in matches]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [header, *rows])


# ---------------------------------------------------------------------------------------------
# Projections and the loss terms


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureProjections(keras.layers.Layer):
    """One trainable Dense (student width -> teacher width, with bias, TruncatedNormal(0.02))
    per embeddings/hidden match when the widths differ, named `projection_<feature>_<t>_<s>`
    after the match's loss term (`projection_hidden_4_2`). No projection when the widths match;
    attention is never projected. Training-only weights: never export them with the student.
    """

    def __init__(self, matches: Sequence[Match | dict], teacher: BertConfig | dict,
                 student: BertConfig | dict, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.matches = [m if isinstance(m, Match) else Match(**m) for m in matches]
        self.teacher_config = teacher if isinstance(teacher, BertConfig) else BertConfig.from_dict(teacher)
        self.student_config = student if isinstance(student, BertConfig) else BertConfig.from_dict(student)
        self.initializer_range = initializer_range
        t_width, s_width = self.teacher_config.hidden_size, self.student_config.hidden_size
        self.dense: dict[str, keras.layers.Dense] = {}
        if t_width != s_width:
            for match in self.matches:
                if match.feature in ("embeddings", "hidden"):
                    layer = keras.layers.Dense(
                        t_width, kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
                        name=f"projection_{match.key}")
                    layer.build((None, None, s_width))
                    self.dense[match.key] = layer
        self.built = True

    def project(self, match: Match | int, student_tensor):
        """The student tensor of `match` (a Match or its index) in the teacher's width."""
        if _is_int(match):
            match = self.matches[match]
        layer = self.dense.get(match.key)
        return student_tensor if layer is None else layer(student_tensor)

    def call(self, student_tensor, match=0):
        return self.project(match, student_tensor)

    def get_config(self):
        return {**super().get_config(), "matches": layer_map_to_json(self.matches),
                "teacher": self.teacher_config.to_dict(), "student": self.student_config.to_dict(),
                "initializer_range": self.initializer_range}


def _feature_tensor(outputs: dict, match: Match, side: str):
    key = "attention_scores" if match.feature == "attention" else "hidden_states"
    if key not in outputs:
        flag = "output_attentions" if key == "attention_scores" else "output_hidden_states"
        raise ValueError(f"{side} outputs have no {key!r} (needed by match {match.key}): "
                         f"build the encoder with {flag}=True")
    layer = match.student_layer if side == "student" else match.teacher_layer
    return outputs[key][layer - 1] if match.feature == "attention" else outputs[key][layer]


def intermediate_loss_terms(matches: Sequence[Match], teacher_outputs: dict, student_outputs: dict,
                            attention_mask, projections: FeatureProjections | None = None) -> dict:
    """One weighted float32 loss per example [B] for each match, keyed `feature_teacher_student` (`embeddings_0_0`,
    `hidden_4_2`, `attention_4_2`). The outputs are BertEncoder dicts with `hidden_states` and
    (for attention matches) `attention_scores`; the teacher's side carries no gradient."""
    terms = {}
    for index, match in enumerate(matches):
        teacher = ops.stop_gradient(_feature_tensor(teacher_outputs, match, "teacher"))
        student = _feature_tensor(student_outputs, match, "student")
        if match.feature != "attention":
            if projections is not None:
                student = projections.project(match, student)
            if student.shape[-1] != teacher.shape[-1]:
                raise ValueError(f"match {match.key}: student width {student.shape[-1]} != teacher width "
                                 f"{teacher.shape[-1]}; pass FeatureProjections")
        loss = feature_loss(match.loss, match.feature)(teacher, student, attention_mask)
        terms[match.key] = ops.cast(loss, "float32") * match.weight
    return terms
