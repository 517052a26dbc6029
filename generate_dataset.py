"""Writes the transfer set for distillation: the training sentences, augmented (Tang et al.,
2019), each with the teacher's logits.

    python generate_dataset.py --input=../shared/data/sst2 --model=outputs/teacher/export \\
        --output=outputs/augmented.tsv --augment_factor=20

Output (see `bertdistill/transfer_set.py`): a TSV with header `sentence label logit_<label>...`;
every original first, with its gold label, then its new sentences, labelled with the
teacher's argmax. Rules and probabilities: `bertdistill/augment.py`. Word replacement is POS-guided
when nltk and its tagger are installed, else nearest neighbours in `--word_vectors` when
given, else in the teacher's own input embeddings (`--replacement` chooses explicitly).

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

from bertdistill import augment, data, errors, pipeline, runner, transfer_set, validation
from bertdistill.checkpoints import Teacher, load_teacher
from bertdistill.errors import FlagError
from bertdistill.files import atomic_output
from bertdistill.flags import define_augmentation_flags, on_error, validate_augmentation_flags

flags.DEFINE_bool("no_augment", False, "Only label the original sentences.")
flags.DEFINE_float("p_mask", 0.1, "Per-word probability of [MASK].")
flags.DEFINE_float("p_replace", 0.1, "Per-word probability of a same-kind replacement.")
flags.DEFINE_float("p_ngram", 0.25, "Per-sentence probability of keeping only a random n-gram (n in 1..5).")
flags.DEFINE_enum("replacement", "auto", ["auto", "pos", "word_vectors", "teacher_embeddings"],
                  "How a replacement word is chosen (auto: pos, else word_vectors, else teacher_embeddings).")
flags.DEFINE_string("word_vectors", None, "GloVe/word2vec text file for --replacement=word_vectors.")
define_augmentation_flags(
    model_help="Teacher: an export folder of bert_finetune, a Hugging Face folder or a Google checkpoint prefix "
               "(with --bert_config_file and --vocab_file).",
    augment_factor_help="Augmentation attempts per original (Tang et al.: 20).",
    batch_size_help="Teacher inference batch size.", max_seq_length_help="Teacher's maximum WordPiece tokens.",
    chunk_size=2048)
errors.define_flags()
FLAGS = flags.FLAGS


def make_replacer(kind: str, teacher: Teacher, corpus: list[str]) -> augment.Replacer | None:
    """The word replacer `--replacement` asks for (see the module docstring)."""
    tagger = augment.nltk_pos_tagger() if kind in ("auto", "pos") else None
    if kind == "pos" and tagger is None:
        raise FlagError("replacement", "--replacement=pos needs nltk with its averaged_perceptron_tagger data")
    if tagger is not None:
        logging.info("Word replacement: POS-guided (nltk)")
        return augment.PosReplacer(tagger, [sentence.split() for sentence in corpus])
    words = {w for sentence in corpus for w in sentence.split()}
    if kind == "word_vectors" or (kind == "auto" and FLAGS.word_vectors):
        if not FLAGS.word_vectors:
            raise FlagError("word_vectors", "--replacement=word_vectors needs --word_vectors")
        logging.info("Word replacement: nearest neighbours in %s", FLAGS.word_vectors)
        replacer = augment.NeighbourReplacer.from_word_vectors_file(FLAGS.word_vectors, vocabulary=words)
    else:
        logging.info("Word replacement: nearest neighbours in the teacher's input embeddings")
        embeddings = teacher.pretrained.weights["bert/embeddings/word_embeddings"]
        replacer = augment.NeighbourReplacer.from_token_embeddings(teacher.tokenizer.vocab, embeddings)
    replacer.precompute(words)
    return replacer


def expand(examples: list[data.InputExample], first_index: int, seen: set[str], config: augment.AugmentConfig,
           replacer: augment.Replacer | None) -> tuple[list[str], list[str | None]]:
    """Sentences and gold labels (None for new ones): each original, then its new sentences
    that are not in `seen` (all originals and earlier new sentences), which it updates."""
    sentences, gold = [], []
    for offset, example in enumerate(examples):
        sentences.append(example.text_a)
        gold.append(example.label)
        if FLAGS.no_augment:
            continue
        rng = augment.rng_for(FLAGS.seed, first_index + offset)
        for new in augment.augment_sentence(example.text_a, FLAGS.augment_factor, rng, config, replacer):
            if new not in seen:
                seen.add(new)
                sentences.append(new)
                gold.append(None)
    return sentences, gold


def label_with_teacher(teacher: Teacher, sentences: list[str]) -> np.ndarray:
    """The teacher's float32 logits [len(sentences), num_labels], batched through the shared pipeline."""
    examples = [data.InputExample(guid=str(i), text_a=s) for i, s in enumerate(sentences)]
    features = pipeline.convert_examples_to_features(examples, teacher.tokenizer, teacher.labels,
                                                     FLAGS.max_seq_length)
    return pipeline.predict_logits(teacher.model, features, batch_size=FLAGS.batch_size)


def validate_flags() -> None:
    """Refuses flag values that cannot be meant, naming the flag, before anything is loaded."""
    validation.require("model", FLAGS.model)
    validate_augmentation_flags(FLAGS, min_seq_length=3)
    for name in ("p_mask", "p_replace", "p_ngram"):
        validation.in_range(name, FLAGS[name].value, 0.0, 1.0)
    if FLAGS.replacement == "word_vectors" and not FLAGS.word_vectors:
        raise FlagError("word_vectors", "--replacement=word_vectors needs --word_vectors")
    if FLAGS.word_vectors and not os.path.isfile(FLAGS.word_vectors):
        raise FlagError("word_vectors", f"--word_vectors={FLAGS.word_vectors} does not exist")


def main(argv):
    del argv
    validate_flags()
    validation.model_path("model", FLAGS.model)
    config = augment.AugmentConfig(p_mask=FLAGS.p_mask, p_replace=FLAGS.p_replace, p_ngram=FLAGS.p_ngram)
    keras.mixed_precision.set_global_policy("float32")
    task_labels = None if os.path.isdir(FLAGS.model) else data.get_processor(FLAGS.task_name).get_labels()
    teacher = load_teacher(FLAGS.model, bert_config_file=FLAGS.bert_config_file, vocab_file=FLAGS.vocab_file,
                           labels=task_labels)
    if FLAGS.max_seq_length > teacher.pretrained.config.max_position_embeddings:
        raise FlagError("max_seq_length", f"--max_seq_length={FLAGS.max_seq_length} exceeds the teacher's "
                        f"max_position_embeddings={teacher.pretrained.config.max_position_embeddings}")
    examples = transfer_set.read_originals(FLAGS.input, FLAGS.task_name, teacher.labels,
                                           on_error=on_error(FLAGS))[:FLAGS.max_examples]
    runner.prepare_run(FLAGS, outputs={"output": FLAGS.output},
                       inputs={"input": FLAGS.input, "model": FLAGS.model, "bert_config_file": FLAGS.bert_config_file,
                               "vocab_file": FLAGS.vocab_file, "word_vectors": FLAGS.word_vectors})
    corpus = [e.text_a for e in examples]
    replacer = None if FLAGS.no_augment or FLAGS.p_replace == 0 else make_replacer(FLAGS.replacement, teacher, corpus)
    start, end = transfer_set.shard_bounds(len(examples), FLAGS.num_shards, FLAGS.shard_index)
    logging.info("Shard %d/%d: originals %d..%d of %d", FLAGS.shard_index, FLAGS.num_shards, start, end, len(examples))
    # A new sentence belongs to the first original that yields it: replay the earlier shards'
    # augmentation (cheap next to labelling) so that every shard drops the same duplicates.
    seen = {" ".join(sentence.split()) for sentence in corpus}
    expand(examples[:start], 0, seen, config, replacer)

    began, rows = time.time(), 0
    with atomic_output(FLAGS.output) as out:
        out.write(transfer_set.header(teacher.labels))
        progress = keras.utils.Progbar(end - start, unit_name="original")
        for chunk_start in range(start, end, FLAGS.chunk_size):
            chunk = examples[chunk_start:min(chunk_start + FLAGS.chunk_size, end)]
            sentences, gold = expand(chunk, chunk_start, seen, config, replacer)
            logits = label_with_teacher(teacher, sentences)
            predicted = [teacher.labels[i] for i in logits.argmax(axis=1)]
            out.write(transfer_set.format_rows(
                sentences, [g if g is not None else p for g, p in zip(gold, predicted)], logits))
            rows += len(sentences)
            progress.add(len(chunk))
    seconds = time.time() - began
    logging.info("Wrote %s: %d rows from %d originals in %.1f s (%.1f sentences/s)", FLAGS.output, rows, end - start,
                 seconds, rows / max(seconds, 1e-9))


if __name__ == "__main__":
    errors.run(main)
