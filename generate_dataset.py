"""Writes the transfer set for distillation: the training sentences (or sentence pairs),
augmented (Tang et al., 2019), each with the teacher's logits (the mean of several teachers'
with `--model=a,b`).

    python generate_dataset.py --input=../shared/data/sst2 --model=outputs/teacher/export \\
        --output=outputs/augmented.tsv --augment_factor=20
    python generate_dataset.py --input=my_task/ --task_name=tsv --labels=no,yes --text_a_column=question \\
        --text_b_column=answer --label_column=verdict --model=outputs/teacher/export --output=outputs/augmented.tsv

A folder `--input` is read as `--task_name` and its column flags say (those of run_classifier.py).
Output (see `bertdistill/distill/transfer_set.py`): a TSV with header `sentence label logit_<label>...`
(pairs: `sentence sentence_b label logit_<label>...`); every original first, with its gold
label, then its new sentences, labelled with the argmax of the (mean) logits. A pair's two
texts are augmented independently by the same rule and paired up (`augment.pair_up`). Data that
is not what a teacher's export says it reads (pairs or single texts) is refused. Several teachers must share vocabulary, lower-casing and labels;
each runs over the same length-sorted batches. Rules and probabilities: `bertdistill/data/augment.py`.
Word replacement is POS-guided when nltk and its tagger are installed, else nearest neighbours
in `--word_vectors` when given, else in the (first) teacher's own input embeddings
(`--replacement` chooses explicitly). The teachers are logged with the written row count.
`--mixed_precision=mixed_bfloat16` runs the teachers in bfloat16 (about 1.5x as fast on CPUs
with bf16 units; the logits move by a few thousandths on average, see docs/results.md).

Shards: `--num_shards=N --shard_index=k` take the k-th contiguous slice of the originals and
augment each exactly as the whole run does (per-example seeds), so the shards' outputs, each
after its header (`tail -n +2`), concatenated in order, equal the unsharded output.
The output is written to a temporary file beside `--output` and renamed when complete.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
from absl import flags, logging

from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.data import augment, data, pipeline

from bertdistill.distill import transfer_set

from bertdistill.tasks import runner

from bertdistill.training import validation
from bertdistill.training.distribute import set_precision_policy
from bertdistill.configs import TransferSetConfig
from bertdistill.models.checkpoints import Teacher, load_teacher
from bertdistill.errors import FlagError, shorten
from bertdistill.files import atomic_output

script_flags.define_generate_dataset_flags()
FLAGS = flags.FLAGS


def make_replacer(kind: str, word_vectors: str | None, teacher: Teacher,
                  corpus: list[str]) -> augment.Replacer | None:
    """The word replacer `--replacement` asks for (see the module docstring)."""
    tagger = augment.nltk_pos_tagger() if kind in ("auto", "pos") else None
    if kind == "pos" and tagger is None:
        raise FlagError("replacement", "--replacement=pos needs nltk with its averaged_perceptron_tagger data")
    if tagger is not None:
        logging.info("Word replacement: POS-guided (nltk)")
        return augment.PosReplacer(tagger, [sentence.split() for sentence in corpus])
    words = {w for sentence in corpus for w in sentence.split()}
    if kind == "word_vectors" or (kind == "auto" and word_vectors):
        if not word_vectors:
            raise FlagError("word_vectors", "--replacement=word_vectors needs --word_vectors")
        logging.info("Word replacement: nearest neighbours in %s", word_vectors)
        replacer = augment.NeighbourReplacer.from_word_vectors_file(word_vectors, vocabulary=words)
    else:
        logging.info("Word replacement: nearest neighbours in the input embeddings of %s", teacher.pretrained.source)
        replacer = augment.NeighbourReplacer.from_token_embeddings(teacher.tokenizer.vocab,
                                                                   teacher.pretrained.input_embeddings())
    replacer.precompute(words)
    return replacer


def expand(examples: list[data.InputExample], first_index: int, seen: set[tuple[str, str | None]],
           config: TransferSetConfig, replacer: augment.Replacer | None) -> list[data.InputExample]:
    """Each original, then its new examples (no label) that are not in `seen` (the keys, `key`, of
    all originals and earlier new examples), which it updates. A pair's texts are augmented one
    after the other with the original's generator, then paired up (`augment.pair_up`)."""
    rules = augment.AugmentConfig(p_mask=config.p_mask, p_replace=config.p_replace, p_ngram=config.p_ngram)
    seed, factor = config.augmentation.seed, config.augmentation.augment_factor
    out = []
    for offset, example in enumerate(examples):
        out.append(example)
        if config.no_augment:
            continue
        rng = augment.rng_for(seed, first_index + offset)
        new_a = augment.augment_sentence(example.text_a, factor, rng, rules, replacer)
        if example.text_b is None:
            new = [(text, None) for text in new_a]
        else:
            new_b = augment.augment_sentence(example.text_b, factor, rng, rules, replacer)
            new = augment.pair_up(example.text_a, example.text_b, new_a, new_b)
        for text_a, text_b in new:
            if key(text_a, text_b) not in seen:
                seen.add(key(text_a, text_b))
                out.append(data.InputExample(guid=f"new-{len(seen)}", text_a=text_a, text_b=text_b))
    return out


def key(text_a: str, text_b: str | None) -> tuple[str, str | None]:
    """What makes two examples the same: their texts' words."""
    return " ".join(text_a.split()), None if text_b is None else " ".join(text_b.split())


def label_with_teachers(teachers: list[Teacher], examples: list[data.InputExample], *, max_seq_length: int,
                        batch_size: int) -> np.ndarray:
    """The mean of the teachers' float32 logits [len(examples), num_labels]: the examples are
    encoded once (the teachers share a tokenizer) and each teacher runs over the same
    length-sorted batches of the shared pipeline."""
    features = pipeline.convert_examples_to_features(examples, teachers[0].tokenizer, teachers[0].labels,
                                                     max_seq_length)
    total = sum(pipeline.predict_logits(t.model, features, batch_size=batch_size) for t in teachers)
    return total / len(teachers)


def check_same_inputs(first: Teacher, other: Teacher) -> None:
    """FlagError naming `other` unless it shares `first`'s vocabulary, lower-casing and labels
    (else their logits cannot be averaged)."""
    differs = [what for what, a, b in (("vocabulary", first.tokenizer.vocab, other.tokenizer.vocab),
                                       ("lower-casing", first.tokenizer.do_lower_case, other.tokenizer.do_lower_case),
                                       ("labels", first.labels, other.labels),
                                       ("text inputs", first.text_inputs, other.text_inputs)) if a != b]
    if differs:
        raise FlagError("model", f"--model: teacher {shorten(other.pretrained.source)} differs from "
                        f"{shorten(first.pretrained.source)} in its {' and '.join(differs)}; the teachers' logits are "
                        "averaged, so they must share vocabulary, lower-casing, labels and text inputs")


def load_teachers(config: TransferSetConfig, labels: list[str]) -> list[Teacher]:
    """The `--model` teachers, each checked against `--max_seq_length` and the first (`check_same_inputs`)
    as soon as it is loaded."""
    run = config.augmentation
    teachers = []
    for path in config.models:
        teacher = load_teacher(path, bert_config_file=run.bert_config_file, vocab_file=run.vocab_file,
                               labels=None if os.path.isdir(path) else labels)
        validation.max_seq_length_fits(run.max_seq_length, teacher.pretrained.config, f"the teacher {shorten(path)}")
        if teachers:
            check_same_inputs(teachers[0], teacher)
        teachers.append(teacher)
    return teachers


def inputs(config: TransferSetConfig) -> dict[str, str | None]:
    """{flag: path} of everything the run reads."""
    run = config.augmentation
    return {"input": run.input, **{f"model {i}": path for i, path in enumerate(config.models)},
            "bert_config_file": run.bert_config_file, "vocab_file": run.vocab_file, "word_vectors": config.word_vectors}


def checked_config() -> TransferSetConfig:
    """The run's config, its flag values refused when they cannot be meant (naming the flag) before
    anything is loaded."""
    script_flags.validate_generate_dataset_flags(FLAGS)
    config = script_flags.transfer_set_config(FLAGS)
    validation.check_outputs({"output": config.augmentation.output}, inputs(config).values())
    for path in config.models:
        validation.model_path("model", path)
    if config.word_vectors and not os.path.isfile(config.word_vectors):
        raise FlagError("word_vectors", f"--word_vectors={config.word_vectors} does not exist")
    return config


def main(argv):
    del argv
    config = checked_config()
    run = config.augmentation
    set_precision_policy(config.precision)
    processor = data.processor_from_config(run.data)
    teachers = load_teachers(config, processor.get_labels())
    teacher = teachers[0]
    examples = transfer_set.read_originals(run.input, processor, teacher.labels,
                                           on_error=run.data.on_error)[:run.max_examples]
    transfer_set.check_text_inputs(examples, teacher.text_inputs, f"--input={run.input}",
                                   f"the teacher {shorten(config.models[0])}")
    pairs = examples[0].text_b is not None
    runner.prepare_run(outputs={"output": run.output}, inputs=inputs(config))
    corpus = [text for e in examples for text in (e.text_a, e.text_b) if text is not None]
    replacer = (None if config.no_augment or config.p_replace == 0
                else make_replacer(config.replacement, config.word_vectors, teacher, corpus))
    start, end = transfer_set.shard_bounds(len(examples), run.num_shards, run.shard_index)
    logging.info("Shard %d/%d: originals %d..%d of %d", run.shard_index, run.num_shards, start, end, len(examples))
    # A new example belongs to the first original that yields it: replay the earlier shards'
    # augmentation (cheap next to labelling) so that every shard drops the same duplicates.
    seen = {key(e.text_a, e.text_b) for e in examples}
    expand(examples[:start], 0, seen, config, replacer)

    began, rows = time.time(), 0
    with atomic_output(run.output) as out:
        out.write(transfer_set.header(teacher.labels, pairs))
        progress = keras.utils.Progbar(end - start, unit_name="original")
        for chunk_start in range(start, end, run.chunk_size):
            chunk = examples[chunk_start:min(chunk_start + run.chunk_size, end)]
            expanded = expand(chunk, chunk_start, seen, config, replacer)
            logits = label_with_teachers(teachers, expanded, max_seq_length=run.max_seq_length,
                                         batch_size=run.batch_size)
            predicted = [teacher.labels[i] for i in logits.argmax(axis=1)]
            out.write(transfer_set.format_rows(
                [e.text_a for e in expanded], [e.label or p for e, p in zip(expanded, predicted)], logits,
                [e.text_b for e in expanded] if pairs else None))
            rows += len(expanded)
            progress.add(len(chunk))
    seconds = time.time() - began
    logging.info("Wrote %s: %d rows from %d originals in %.1f s (%.1f examples/s), labelled by the mean of %d "
                 "teacher(s): %s", run.output, rows, end - start, seconds, rows / max(seconds, 1e-9), len(teachers),
                 ", ".join(config.models))


if __name__ == "__main__":
    entry.run(main)
