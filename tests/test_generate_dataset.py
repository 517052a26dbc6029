"""generate_dataset.py on a 20-line TSV with tiny teachers: columns, rows, shards, teacher logits, the mean
of two teachers, errors."""
import json

import numpy as np
import pytest

from bertdistill.distill import transfer_set

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertClassifier, BertEncoder
from tests.bert_fixtures import TINY_VOCAB, tiny_batch, tiny_config, write_vocab
from tests.scripts import run_script

SCRIPT = "generate_dataset.py"
WORDS = ["the", "movie", "was", "great", "bad", "not", "good", "fun", "dull", "plot", "film", "a"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Two tiny teacher export-style folders (Hugging Face files + labels.json; same vocabulary, other
    random weights) and a 20-line train TSV."""
    root = tmp_path_factory.mktemp("gen")
    vocab = write_vocab(root / "vocab.txt")
    for name in ("teacher", "teacher2"):
        model = BertClassifier(BertEncoder(tiny_config()), 2)
        model(tiny_batch())
        model.head.kernel.assign(model.head.kernel * 300.0)  # logits of order 1, not 0.003 as initialised
        checkpoints.save_hf_folder(model, str(root / name), vocab, ["0", "1"], True)
        (root / name / "labels.json").write_text(json.dumps(["0", "1"]))
    rng = np.random.default_rng(0)
    rows = [f"{' '.join(rng.choice(WORDS, rng.integers(3, 9)))}\t{i % 2}" for i in range(20)]
    (root / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def generate(workspace, output, *args, teachers=("teacher",), check=True):
    models = ",".join(str(workspace / teacher) for teacher in teachers)
    return run_script(SCRIPT, f"--input={workspace / 'train.tsv'}", f"--model={models}",
                      f"--output={output}", "--augment_factor=4", "--batch_size=8", "--chunk_size=6",
                      "--replacement=teacher_embeddings", "--max_seq_length=16", *args, check=check)


def test_columns_rows_labels_and_teacher_logits(workspace, tmp_path):
    output = tmp_path / "augmented.tsv"
    generate(workspace, output)
    lines = output.read_text().splitlines()
    assert lines[0] == "sentence\tlabel\tlogit_0\tlogit_1"
    examples, logits = transfer_set.read_transfer_set(str(output), ["0", "1"])
    originals = [line.split("\t") for line in (workspace / "train.tsv").read_text().splitlines()[1:]]
    sentences = [e.text_a for e in examples]
    positions = [sentences.index(sentence) for sentence, _ in originals]
    assert positions == sorted(positions) and positions[0] == 0  # every original, in order, each before its new rows
    for (sentence, gold), position in zip(originals, positions):
        assert examples[position].label == gold  # originals keep their gold label
    new = [i for i in range(len(examples)) if i not in positions]
    assert 20 < len(examples) <= 20 * 5 and new
    assert len(set(sentences)) == len(sentences)  # SST-2-like originals are distinct; new rows never repeat
    for i in new:
        assert examples[i].label == str(int(logits[i].argmax()))  # new rows: the teacher's argmax
        assert examples[i].text_a not in {s for s, _ in originals}
    teacher = checkpoints.load_teacher(str(workspace / "teacher"))
    ids = [teacher.tokenizer.encode(s, max_seq_length=16)[0] for s in sentences[:5]]
    for row, expected in zip(ids, logits[:5]):
        batch = {"input_ids": np.array([row], np.int32), "attention_mask": np.ones((1, len(row)), np.int32),
                 "token_type_ids": np.zeros((1, len(row)), np.int32)}
        np.testing.assert_allclose(teacher.model(batch).numpy()[0], expected, atol=1e-4)


def test_bfloat16_labelling_writes_the_same_rows_with_nearby_logits(workspace, tmp_path):
    generate(workspace, tmp_path / "float32.tsv", "--seed=3")
    generate(workspace, tmp_path / "bfloat16.tsv", "--seed=3", "--mixed_precision=mixed_bfloat16")
    exact, exact_logits = transfer_set.read_transfer_set(str(tmp_path / "float32.tsv"), ["0", "1"])
    rounded, rounded_logits = transfer_set.read_transfer_set(str(tmp_path / "bfloat16.tsv"), ["0", "1"])
    assert [e.text_a for e in rounded] == [e.text_a for e in exact]
    assert not np.array_equal(rounded_logits, exact_logits)  # the teacher did run in bfloat16
    assert np.abs(exact_logits).mean() > 0.1
    np.testing.assert_allclose(rounded_logits, exact_logits, atol=0.05)


def test_two_shards_concatenate_to_the_unsharded_output(workspace, tmp_path):
    generate(workspace, tmp_path / "all.tsv", "--seed=7")
    parts = []
    for index in range(2):
        generate(workspace, tmp_path / f"part{index}.tsv", "--seed=7", "--num_shards=2", f"--shard_index={index}")
        parts += (tmp_path / f"part{index}.tsv").read_text().splitlines()[1:]
    assert parts == (tmp_path / "all.tsv").read_text().splitlines()[1:]


def test_no_augment_labels_only_the_originals(workspace, tmp_path):
    generate(workspace, tmp_path / "plain.tsv", "--no_augment", "--max_examples=7")
    lines = (tmp_path / "plain.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in lines[1:]] == [
        line.split("\t") for line in (workspace / "train.tsv").read_text().splitlines()[1:8]]


def test_two_teachers_write_the_mean_of_their_logits(workspace, tmp_path):
    logits = {}
    for teachers in (("teacher",), ("teacher2",), ("teacher", "teacher2")):
        output = tmp_path / f"{'+'.join(teachers)}.tsv"
        generate(workspace, output, "--no_augment", teachers=teachers)
        logits[teachers] = transfer_set.read_transfer_set(str(output), ["0", "1"])[1]
    first, second = logits[("teacher",)], logits[("teacher2",)]
    assert np.abs(first - second).max() > 1e-3  # two different teachers
    np.testing.assert_allclose(logits[("teacher", "teacher2")], (first + second) / 2, rtol=0, atol=1e-5)


def test_two_teachers_label_new_sentences_with_the_argmax_of_the_mean(workspace, tmp_path):
    output = tmp_path / "augmented.tsv"
    result = generate(workspace, output, teachers=("teacher", "teacher2"))
    examples, logits = transfer_set.read_transfer_set(str(output), ["0", "1"])
    gold = dict(line.split("\t") for line in (workspace / "train.tsv").read_text().splitlines()[1:])
    assert len(examples) > len(gold)
    for example, row in zip(examples, logits):
        assert example.label == gold.get(example.text_a, str(int(row.argmax())))
    assert f"mean of 2 teacher(s): {workspace / 'teacher'}, {workspace / 'teacher2'}" in result.stderr


def test_teacher_vocab_mismatch_fails_clearly_and_keeps_previous_output(workspace, tmp_path):
    output = tmp_path / "augmented.tsv"
    output.write_text("previous run\n")
    wrong_vocab = tmp_path / "vocab.txt"
    wrong_vocab.write_text("\n".join(TINY_VOCAB + ["extra"]) + "\n")
    result = generate(workspace, output, f"--vocab_file={wrong_vocab}", check=False)
    assert result.returncode and "vocab" in result.stderr and "21" in result.stderr
    assert output.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["augmented.tsv", "vocab.txt"]  # no temporary file left
    bad_input = generate(workspace, output, f"--input={tmp_path / 'missing.tsv'}", check=False)
    assert bad_input.returncode and "missing.tsv" in bad_input.stderr
