"""A student with its own vocabulary: a tiny MPNet teacher (its own special tokens, pad id 1)
distilled into a pretrained BERT student (a BERT vocabulary, a choice of its layers) by
tinybert/task_distill.py, end to end; the alignment check and the one-line refusals."""
import json
import re
import shutil

import keras
import numpy as np
import pytest

from bertdistill.data import pipeline

from bertdistill.distill import tinybert

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier, BertEncoder
from bertdistill.data.data import InputExample
from bertdistill.models.mpnet import MPNetEncoder
from bertdistill.data.tokenization import Tokenizer, piece_id_map
from tests.bert_fixtures import tiny_config
from tests.scripts import error_lines, run_script
from tests.test_mpnet import MPNET_VOCAB, tiny_mpnet_config

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad", "not", "good",
              "fun", "dull", "film", "plot", "##s", "a", "."]
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]


def _vocab(path, tokens):
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """An MPNet teacher folder (labels.json), a 4-layer BERT student folder, SST-2-format data
    and a transfer set with the teacher's logits."""
    root = tmp_path_factory.mktemp("cross")
    keras.utils.set_random_seed(0)
    heads = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32)
    teacher = BertClassifier(MPNetEncoder(tiny_mpnet_config(num_hidden_layers=4, **heads)), 2, pooling="mean")
    checkpoints.save_hf_folder(teacher, str(root / "teacher"), _vocab(root / "mpnet_vocab.txt", MPNET_VOCAB),
                               ["0", "1"], True)
    (root / "teacher" / "labels.json").write_text(json.dumps(["0", "1"]))
    student = BertEncoder(tiny_config(vocab_size=len(BERT_VOCAB), num_hidden_layers=4, hidden_size=8,
                                      num_attention_heads=2, intermediate_size=16, max_position_embeddings=32))
    checkpoints.save_hf_encoder(student, str(root / "student"), _vocab(root / "bert_vocab.txt", BERT_VOCAB), True)
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 8)))}\t{i % 2}" for i in range(8)]
        (root / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    sentences = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 8)))}" for _ in range(12)]
    logits = rng.normal(size=(12, 2))
    (root / "transfer.tsv").write_text("sentence\tlabel\tlogit_0\tlogit_1\n" + "".join(
        f"{s}\t{int(l[1] > l[0])}\t{l[0]:.6f}\t{l[1]:.6f}\n" for s, l in zip(sentences, logits)))
    return root


def run(workspace, output_dir, *args, check=True):
    return run_script("tinybert/task_distill.py", f"--teacher_model={workspace / 'teacher'}",
                      f"--student_model={workspace / 'student'}", f"--data_dir={workspace / 'data'}",
                      f"--output_dir={output_dir}", "--max_seq_length=16", "--train_batch_size=4",
                      "--eval_batch_size=4", "--intermediate_epochs=1", "--prediction_epochs=1", *args, check=check)


def test_piece_map_and_alignment_follow_word_pieces(workspace):
    teacher = Tokenizer(str(workspace / "mpnet_vocab.txt"))
    student = Tokenizer(str(workspace / "bert_vocab.txt"))
    table = piece_id_map(teacher, student)
    assert table[0] == 2 and table[2] == 3 and table[1] == 0 and table[MPNET_VOCAB.index("film")] == BERT_VOCAB.index("film")
    assert table[MPNET_VOCAB.index("<unk>")] == -1
    examples = [InputExample("a", "the movie was fun .", None, "1"), InputExample("b", "a dull plot", None, "0")]
    t, s = (pipeline.convert_examples_to_features(examples, tok, ["0", "1"], 16) for tok in (teacher, student))
    assert pipeline.misaligned(t, s, table) is None
    assert s.pad_id == 0 and t.pad_id == 1
    short = Tokenizer(_vocab(workspace / "short_vocab.txt", [w for w in BERT_VOCAB if w != "dull"]))
    s_short = pipeline.convert_examples_to_features(examples, short, ["0", "1"], 16)
    assert pipeline.misaligned(t, s_short, piece_id_map(teacher, short)) == 1
    pair = [InputExample("p", "the movie", "was fun", "1")]
    t_pair, s_pair = (pipeline.convert_examples_to_features(pair, tok, ["0", "1"], 16) for tok in (teacher, student))
    assert pipeline.misaligned(t_pair, s_pair, table) == 0  # <s> A </s></s> B </s> is one token longer


def test_a_masked_word_is_each_vocabularys_own_mask_token(workspace):
    """The transfer set writes a masked word as [MASK]: MPNet reads it as <mask>, one piece aligned
    with BERT's [MASK] (not as the three pieces `[ mask ]` of the plain text)."""
    teacher = Tokenizer(str(workspace / "mpnet_vocab.txt"))
    student = Tokenizer(str(workspace / "bert_vocab.txt"))
    assert teacher.encode("the [MASK] was fun")[0] == [0, 6, MPNET_VOCAB.index("<mask>"), 8, 13, 2]
    assert student.encode("the [MASK] was fun")[0] == [2, 5, 4, 7, 12, 3]
    examples = [InputExample("a", "the [MASK] was [MASK] .", None, "1"), InputExample("b", "[MASK] dull plot", None, "0")]
    t, s = (pipeline.convert_examples_to_features(examples, tok, ["0", "1"], 16) for tok in (teacher, student))
    assert pipeline.misaligned(t, s, piece_id_map(teacher, student)) is None


def test_batches_carry_both_tokenizations_padded_with_their_own_ids(workspace):
    teacher = Tokenizer(str(workspace / "mpnet_vocab.txt"))
    student = Tokenizer(str(workspace / "bert_vocab.txt"))
    examples = [InputExample("a", "the movie was fun .", None, "1"), InputExample("b", "a dull plot", None, "0")]
    t, s = (pipeline.convert_examples_to_features(examples, tok, ["0", "1"], 16) for tok in (teacher, student))
    x, _ = next(iter(pipeline.make_dataset(s, batch_size=2, is_training=False, teacher_features=t)))
    assert x["input_ids"].numpy().tolist() == [[2, 5, 6, 7, 12, 18, 3], [2, 17, 13, 15, 3, 0, 0]]
    assert x["teacher_input_ids"].numpy()[1].tolist() == [0, 18, 14, 16, 2, 1, 1]
    np.testing.assert_array_equal(x["teacher_attention_mask"], x["attention_mask"])


def test_intermediate_task_feeds_the_teacher_its_own_ids(workspace):
    teacher = checkpoints.load_teacher(str(workspace / "teacher"))
    online = tinybert.with_distillation_outputs(teacher.model)
    student = tinybert.distillation_classifier(
        tiny_config(vocab_size=len(BERT_VOCAB), num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0), 2, "mean")
    examples = [InputExample("a", "the movie was fun .", None, "1"), InputExample("b", "a dull plot", None, "0")]
    t = pipeline.convert_examples_to_features(examples, teacher.tokenizer, ["0", "1"], 16)
    s = pipeline.convert_examples_to_features(examples, Tokenizer(str(workspace / "bert_vocab.txt")), ["0", "1"], 16)
    x, y = next(iter(pipeline.make_dataset(s, batch_size=2, is_training=False, teacher_features=t)))
    from bertdistill.distill import layer_map
    matches = layer_map.resolve_layer_map("uniform", online.encoder.config, student.encoder.config)
    projections = layer_map.FeatureProjections(matches, online.encoder.config, student.encoder.config)
    task = tinybert.IntermediateTask(online.encoder, student, student.encoder, matches, projections)
    terms = task.loss_terms(x, y)
    teacher_x = {k: x["teacher_" + k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    student_x = {k: x[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    expected = layer_map.intermediate_loss_terms(matches, online.encoder(teacher_x), student.encoder(student_x),
                                                 x["attention_mask"], projections)
    for name in expected:
        np.testing.assert_allclose(np.asarray(terms[name]), np.asarray(expected[name]), rtol=1e-5)
    wrong = layer_map.intermediate_loss_terms(matches, online.encoder(student_x), student.encoder(student_x),
                                              x["attention_mask"], projections)
    assert any(np.abs(np.asarray(wrong[n]) - np.asarray(expected[n])).max() > 1e-6 for n in expected)

    stored = {"label_ids": y, "teacher_logits": np.array([[2.0, -1.0], [0.5, 1.5]], np.float32)}
    prediction = tinybert.PredictionTask(student, None)
    joint = tinybert.JointTask(prediction, task, intermediate_weight=0.25).loss_terms(x, stored)
    assert set(joint) == {"soft_cross_entropy", *expected}
    np.testing.assert_allclose(np.asarray(joint["soft_cross_entropy"]),
                               np.asarray(prediction.loss_terms(student_x, stored)["soft_cross_entropy"]), rtol=1e-5)
    for name in expected:  # one pass of the student gives the same features, scaled by the weight
        np.testing.assert_allclose(np.asarray(joint[name]), 0.25 * np.asarray(expected[name]), rtol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_mpnet_teacher_into_pretrained_bert_student_layers(workspace, tmp_path, precision):
    out = tmp_path / "run"
    run(workspace, out, "--student_layers=2,4", f"--augmented_file={workspace / 'transfer.tsv'}",
        f"--mixed_precision={precision}")
    export = out / "export"
    assert (export / "vocab.txt").read_text() == (workspace / "bert_vocab.txt").read_text()
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 2 and config["hidden_size"] == 8
    student_weights = checkpoints.select_layers(checkpoints.resolve_pretrained(str(workspace / "student")), [2, 4])
    assert student_weights.config.num_hidden_layers == 2
    assert json.loads((out / "intermediate" / "layer_map.json").read_text())


def test_stage_2_keeps_the_layer_maps_terms_from_stage_1s_projections(workspace, tmp_path):
    out = tmp_path / "run"
    transfer = f"--augmented_file={workspace / 'transfer.tsv'}"
    joint = ("--layer_map=uniform:hidden", "--intermediate_loss_weight=0.5", transfer)  # the run's settings
    run(workspace, out, "--stage=intermediate", *joint)
    saved = out / "intermediate" / "projections.weights.h5"
    assert saved.exists()
    result = run(workspace, out, "--stage=prediction", "--log_every_steps=1", *joint)
    assert f"Stage 2 starts from stage 1's projections: {saved}" in result.stderr
    epoch = re.search(r"epoch 0 \(step \d+\): (.*)", result.stderr).group(1)
    assert "soft_cross_entropy" in epoch and "hidden_4_4" in epoch and "attention" not in epoch
    assert not any("projection" in name for name in checkpoints.resolve_pretrained(str(out / "export")).weights)


def test_a_student_starts_from_layers_of_another_students_export(workspace, tmp_path):
    """The large preset's 3-layer student: a choice of layers of an earlier student's export folder
    (with its vocabulary and its classifier head, a classifier of the same task), stage 2 only.
    At a learning rate of 1e-12 the second student's export is its start."""
    first, second = tmp_path / "first", tmp_path / "second"
    transfer = f"--augmented_file={workspace / 'transfer.tsv'}"
    run(workspace, first, "--stage=prediction", transfer)
    result = run(workspace, second, "--stage=prediction", transfer, f"--student_model={first / 'export'}",
                 "--student_layers=1,4", "--prediction_learning_rate=1e-12")
    assert f"keeps the classifier head of {first / 'export'}" in result.stderr
    config = json.loads((second / "export" / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 2 and config["hidden_size"] == 8
    assert (second / "export" / "vocab.txt").read_text() == (workspace / "bert_vocab.txt").read_text()
    start = checkpoints.select_layers(checkpoints.resolve_pretrained(str(first / "export")), [1, 4])
    exported = checkpoints.resolve_pretrained(str(second / "export"))
    assert start.config.num_hidden_layers == 2 and set(exported.weights) == set(start.weights)
    for name in ("output_weights", "output_bias", "bert/pooler/dense/kernel", "bert/encoder/layer_1/output/dense/bias"):
        np.testing.assert_allclose(exported.weights[name], start.weights[name], atol=1e-8)
    plain = checkpoints.resolve_pretrained(str(workspace / "student"))  # no head: the encoder only
    assert not checkpoints.classifier_head_fits(str(workspace / "student"), plain, ["0", "1"], "cls")
    assert not checkpoints.classifier_head_fits(str(first / "export"), start, ["1", "0"], "cls")


def test_refusals_in_one_line(workspace, tmp_path):
    bad_labels = tmp_path / "bad_labels"
    shutil.copytree(workspace / "student", bad_labels)
    (bad_labels / "labels.json").write_text("{}")
    cases = [
        (["--student_layers=2,9", f"--augmented_file={workspace / 'transfer.tsv'}"], "--student_layers"),
        (["--student_layers=x"], "--student_layers"),
        (["--intermediate_loss_weight=-1", f"--augmented_file={workspace / 'transfer.tsv'}"],
         "--intermediate_loss_weight=-1.0 must be a number >= 0"),
        ([], "pass --augmented_file"),  # stage 2 needs the transfer set's logits
        ([f"--student_model={bad_labels}", f"--augmented_file={workspace / 'transfer.tsv'}"],
         f"{bad_labels / 'labels.json'} must be a non-empty JSON list"),
    ]
    for args, expected in cases:
        result = run(workspace, tmp_path / "refused", *args, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = error_lines(result)
        assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
        assert not (tmp_path / "refused").exists()


def test_student_of_another_family_cannot_start_from_teacher_layers():
    from bertdistill.distill import layer_map

    teacher = MPNetEncoder(tiny_mpnet_config())
    student = BertEncoder(tiny_config(vocab_size=len(MPNET_VOCAB)))
    with pytest.raises(layer_map.LayerMapError, match="cannot initialise a BERT student from MPNet teacher layers"):
        layer_map.copy_teacher_layers(teacher, student, [1, 2])
