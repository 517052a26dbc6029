"""bertdistill/data/robustness.py and evaluate_robustness.py: each perturbation seeded and changing only
what it should, rate 0 the identity; `evaluate`'s accuracies and drops with a fake classifier;
the script end to end on the tiny BERT and BiLSTM exports; bad flags."""
import json
import string

import numpy as np
import pytest

from bertdistill.data import robustness
from bertdistill.data.augment import NeighbourReplacer
from bertdistill.serving.predictor import Predictor
from tests.export_fixtures import LABELS, tiny_exports
from tests.scripts import error_lines, run_script

SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker .",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's "
    "austere locales .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young women .",
    "a sometimes tedious film .",
    "or doing last year 's taxes with your ex-wife .",
    "you do n't have to know about music to appreciate the film 's easygoing blend of comedy and romance .",
    "in exactly 89 minutes , most of which passed as slowly as if i 'd been sitting naked on an igloo , "
    "formula 51 sank from quirky to jerky to utter turkey .",
] * 3
NEIGHBOUR_WORDS = ["film", "movie", "picture", "slow", "sluggish", "tedious", "charming", "delightful", "music",
                   "sound"]


def tiny_neighbours() -> NeighbourReplacer:
    """Pairs of words close together, far from the other pairs."""
    vectors = np.zeros((len(NEIGHBOUR_WORDS), len(NEIGHBOUR_WORDS)), np.float32)
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    for i, group in enumerate(groups):
        vectors[i, group] = 1.0
        vectors[i, 4 + i % 6] = 0.1
    return NeighbourReplacer(NEIGHBOUR_WORDS, vectors, k=2)


def run(name, rate, seed=0, sentences=SENTENCES):
    return robustness.perturb(sentences, name, rate, seed, neighbours=tiny_neighbours())


def changed_pairs(original, perturbed):
    """(old word, new word) of every position that differs, for sentences with the same word count."""
    pairs = []
    for a, b in zip(original, perturbed):
        assert len(a.split()) == len(b.split())
        pairs += [(x, y) for x, y in zip(a.split(), b.split()) if x != y]
    return pairs


@pytest.mark.parametrize("name", list(robustness.PERTURBATIONS))
def test_seeded_and_rate_zero_is_the_identity(name):
    first = run(name, 0.3, seed=1)
    assert first == run(name, 0.3, seed=1)
    assert first != run(name, 0.3, seed=2)
    assert first != SENTENCES
    assert run(name, 0.0) == SENTENCES  # exactly as given, whitespace included
    assert robustness.perturb(["a  film . "], name, 0.0, 1, tiny_neighbours()) == ["a  film . "]
    # sentence i has its own generator: a prefix of the list is perturbed as the whole list perturbs it
    assert run(name, 0.3, seed=1, sentences=SENTENCES[:4]) == first[:4]


def touched(original, perturbed):
    """Per sentence, the positions of the words that changed (same word counts)."""
    return [[i for i, (x, y) in enumerate(zip(a.split(), b.split())) if x != y] for a, b in zip(original, perturbed)]


def test_perturbations_and_rates_draw_independently():
    # the same seed under another perturbation: other words (char_insert changes every word it picks)
    assert touched(SENTENCES, run("char_insert", 0.3, seed=5)) != touched(SENTENCES, run("char_keyboard", 0.3, seed=5))
    # and under another rate: a lower rate does not drop a subset of the words a higher rate drops
    low, high = run("word_dropout", 0.2, seed=5), run("word_dropout", 0.3, seed=5)
    assert any(len(a.split()) < len(b.split()) for a, b in zip(low, high))


def test_char_drop_shortens_the_perturbed_words_by_one_letter():
    perturbed = run("char_drop", 0.5)
    pairs = changed_pairs(SENTENCES, perturbed)
    assert len(pairs) > 20
    for old, new in pairs:
        assert old.isalpha() and len(new) == len(old) - 1
        assert any(old[:i] + old[i + 1:] == new for i in range(len(old)))


def test_char_swap_insert_and_keyboard():
    for old, new in changed_pairs(SENTENCES, run("char_swap", 0.5)):
        assert old.isalpha() and sorted(old) == sorted(new)
        diff = [i for i in range(len(old)) if old[i] != new[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and old[diff[0]] == new[diff[1]]
    for old, new in changed_pairs(SENTENCES, run("char_insert", 0.5)):
        assert old.isalpha() and len(new) == len(old) + 1
        assert any(new[:i] + new[i + 1:] == old and new[i] in string.ascii_lowercase for i in range(len(new)))
    pairs = changed_pairs(SENTENCES, run("char_keyboard", 0.5))
    assert len(pairs) > 20
    for old, new in pairs:
        diff = [i for i in range(len(old)) if old[i] != new[i]]
        assert old.isalpha() and len(new) == len(old) and len(diff) == 1
        assert new[diff[0]] in robustness.KEYBOARD[old[diff[0]]]
    assert set(robustness.KEYBOARD["g"]) == set("ftyhbv")
    assert robustness.char_keyboard("Q", 1.0, np.random.default_rng(0)) in ("A", "W")
    # only words of ASCII letters get typos
    assert robustness.char_drop("'s -- 89 n't ex-wife", 1.0, np.random.default_rng(0)) == "'s -- 89 n't ex-wife"


def test_word_dropout_removes_words_but_never_all():
    perturbed = run("word_dropout", 0.5)
    for original, new in zip(SENTENCES, perturbed):
        words, kept = original.split(), new.split()
        it = iter(words)
        assert all(word in it for word in kept)  # a subsequence of the original
        assert 1 <= len(kept) <= len(words)
    assert sum(map(len, map(str.split, perturbed))) < 0.7 * sum(map(len, map(str.split, SENTENCES)))
    everything = run("word_dropout", 1.0)
    assert all(len(s.split()) == 1 and s in o.split() for s, o in zip(everything, SENTENCES))


def test_word_neighbour_uses_the_neighbours():
    space = tiny_neighbours()
    pairs = changed_pairs(SENTENCES, run("word_neighbour", 1.0))
    assert {old for old, _ in pairs} == {w for s in SENTENCES for w in s.split()} & set(NEIGHBOUR_WORDS)
    assert all(new in space.neighbours(old) for old, new in pairs)
    assert robustness.word_neighbour("A Film", 1.0, np.random.default_rng(0), space) in ("A Movie", "A Picture")
    with pytest.raises(ValueError, match="needs neighbours"):
        robustness.perturb(SENTENCES, "word_neighbour", 0.1, 0)


def test_casing_changes_only_case():
    perturbed = run("casing", 0.5)
    assert all(new.lower() == old for old, new in zip(SENTENCES, perturbed))
    pairs = changed_pairs(SENTENCES, perturbed)
    assert {new for _, new in pairs} & {"A", "Film"} and any(new.isupper() and len(new) > 1 for _, new in pairs)
    everything = run("casing", 1.0)
    assert all(old != new for old, new in changed_pairs(SENTENCES, everything) if any(c.isalpha() for c in old))
    assert robustness.casing("FILM", 1.0, np.random.default_rng(0)) in ("film", "Film")


def test_punctuation_only_touches_punctuation_tokens():
    def words(sentence):
        return [w for w in sentence.split() if not robustness.is_punctuation(w)]

    perturbed = run("punctuation", 0.5)
    assert all(words(new) == words(old) for old, new in zip(SENTENCES, perturbed))
    assert any(len(new.split()) > len(old.split()) for old, new in zip(SENTENCES, perturbed))  # inserted
    assert any(set(old.split()) - set(new.split()) for old, new in zip(SENTENCES, perturbed))  # deleted
    everything = run("punctuation", 1.0)
    for old, new in zip(SENTENCES, everything):
        tokens = new.split()
        assert len(tokens) == 2 * len(words(old)) and set(tokens[1::2]) <= set(robustness.PUNCTUATION_MARKS)
        assert tokens[::2] == words(old)  # every word followed by a new mark; the old marks gone
    assert robustness.punctuation("... !", 1.0, np.random.default_rng(0)) == "..."


def test_evaluate_exact_accuracies_and_drops():
    sentences = SENTENCES[:10]
    labels = ["1", "0", "1", "1", "0", "1", "0", "0", "1", "1"]
    answers = dict(zip(sentences, labels))
    answers[sentences[0]] = answers[sentences[1]] = "wrong"  # clean accuracy 80%
    calls = []

    def predict_labels(texts):  # right only on unchanged sentences it knows
        calls.append(len(texts))
        return np.array([answers.get(text, "unknown") for text in texts])

    result = robustness.evaluate(predict_labels, sentences, labels, seed=3, rates=(0.2, 1.0),
                                 names=["casing", "word_dropout", "word_neighbour"])
    assert result["clean"] == 80.0 and result["examples"] == 10 and calls == [10] * 5
    assert set(result["perturbations"]) == {"casing", "word_dropout"}
    assert result["skipped"] == {"word_neighbour": robustness.NO_NEIGHBOURS}
    casing = result["perturbations"]["casing"]
    assert casing["1.0"] == {"accuracy": 0.0, "drop": 80.0, "changed": 100.0}
    for name, rate in (("casing", 0.2), ("word_dropout", 0.2), ("word_dropout", 1.0)):
        perturbed = robustness.perturb(sentences, name, rate, 3)
        right = sum(p == s and answers[s] == y for p, s, y in zip(perturbed, sentences, labels))
        expected = 100.0 * right / 10
        entry = result["perturbations"][name][str(rate)]
        assert entry["accuracy"] == pytest.approx(expected) and entry["drop"] == pytest.approx(80.0 - expected)
        assert entry["changed"] == pytest.approx(10.0 * sum(p != s for p, s in zip(perturbed, sentences)))
    assert 0 < result["perturbations"]["word_dropout"]["0.2"]["accuracy"] < 80
    with_neighbours = robustness.evaluate(predict_labels, sentences, labels, seed=3, rates=(0.5,),
                                          names=["word_neighbour"], neighbours=tiny_neighbours())
    assert with_neighbours["skipped"] == {} and with_neighbours["perturbations"]["word_neighbour"]["0.5"]["drop"] > 0
    with pytest.raises(ValueError, match="unknown perturbation"):
        robustness.evaluate(predict_labels, sentences, labels, seed=3, names=["typo"])
    with pytest.raises(ValueError, match="rate"):
        robustness.evaluate(predict_labels, sentences, labels, seed=3, rates=(1.5,))


# --- the script, on the tiny exports (labels neg/pos) ---

DEV = ["the movie was great", "bad plot", "not good , dull film", "a fun film", "the movie was not bad",
       "plots", "a dull , bad movie .", "great fun", "the plot was good", "not fun at all",
       "the film was great fun", "dull"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    exports = tiny_exports(tmp_path_factory)
    root = tmp_path_factory.mktemp("robustness")
    dev = root / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "".join(f"{s}\t{LABELS[i % 2]}\n" for i, s in enumerate(DEV)))
    return exports, root, dev


def test_script_end_to_end(setup):
    exports, root, dev = setup
    output = root / "out" / "robustness.json"
    result = run_script("evaluate_robustness.py", f"--model_dir={exports['lstm'].folder},{exports['bert'].folder}",
                        f"--input={dev}", f"--output={output}", "--seed=7", "--rates=0.2,0.5", "--threads=1",
                        f"--neighbours_model={exports['bert'].folder}")
    results = json.loads(output.read_text())
    assert results["seed"] == 7 and results["input"] == str(dev) and results["rates"] == [0.2, 0.5]
    assert list(results["models"]) == ["lstm", "bert"]  # named after the export folders' parents
    gold = [LABELS[i % 2] for i in range(len(DEV))]
    neighbours = robustness.load_neighbours(model_dir=exports["bert"].folder)
    for name, model in results["models"].items():
        predictor = Predictor(exports[name].folder, threads=1)
        assert model["model_dir"] == exports[name].folder and model["precision"] == "float32"
        expected = robustness.evaluate(lambda texts: np.array(LABELS)[predictor.logits(texts).argmax(1)], DEV, gold,
                                       seed=7, rates=(0.2, 0.5), neighbours=neighbours)
        assert {k: model[k] for k in expected} == expected
        assert model["skipped"] == {} and list(model["perturbations"]) == list(robustness.PERTURBATIONS)
        assert model["perturbations"]["word_neighbour"]["0.5"]["changed"] > 0
        assert f"{name} (float32): clean {model['clean']:.2f} on 12 examples" in result.stdout
    assert "char_keyboard" in result.stdout

    quantized = run_script("evaluate_robustness.py", f"--model_dir=student={exports['lstm'].folder}", f"--input={dev}",
                           f"--output={output}", "--quantized", "--perturbations=casing,word_neighbour", "--rates=1",
                           "--threads=1")
    model = json.loads(output.read_text())["models"]["student"]
    assert model["precision"] == "int8" and list(model["perturbations"]) == ["casing"]
    assert list(model["perturbations"]["casing"]) == ["1.0"] and "word_neighbour" in model["skipped"]
    assert "skipped" in quantized.stdout


@pytest.mark.parametrize("flag, value, flag_name", [
    ("--rates", "0.1,1.5", "rates"),
    ("--perturbations", "casing,typos", "perturbations"),
    ("--model_dir", "/nonexistent/export", "model_dir"),
])
def test_bad_flags_fail_before_any_work(setup, flag, value, flag_name):
    exports, root, dev = setup
    output = root / "bad.json"
    args = {"--model_dir": exports["lstm"].folder, "--input": str(dev), "--output": str(output), flag: value}
    result = run_script("evaluate_robustness.py", *(f"{k}={v}" for k, v in args.items()), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and f"--{flag_name}" in lines[0], result.stderr[-2000:]
    assert not output.exists()


def test_neighbours_from_an_mpnet_folder(tmp_path):
    """An MPNet folder (the large preset's teacher) names its embedding table `mpnet.embeddings...`;
    its special tokens (`<s>`, `</s>`, `<mask>`, ...) are never neighbours."""
    from bertdistill.models import checkpoints
    from bertdistill.models.bert import BertClassifier
    from bertdistill.models.mpnet import MPNetEncoder
    from tests.test_mpnet import MPNET_VOCAB, tiny_mpnet_config

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(MPNET_VOCAB) + "\n", encoding="utf-8")
    model = BertClassifier(MPNetEncoder(tiny_mpnet_config()), 2, pooling="mean")
    checkpoints.save_hf_folder(model, str(tmp_path / "mpnet"), str(vocab), ["0", "1"], True)
    neighbours = robustness.load_neighbours(model_dir=str(tmp_path / "mpnet"), k=3)
    found = neighbours.neighbours("film")
    assert len(found) == 3 and set(found) <= set(MPNET_VOCAB) - {"film"}
    assert not any(word.startswith(("<", "[", "##")) or word == "." for word in found)
