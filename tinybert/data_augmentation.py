"""TinyBERT's data augmentation (Jiao et al., 2020), with the masked language model batched.

    python tinybert/data_augmentation.py --input=../shared/data/sst2 --output=outputs/tinybert_aug.tsv \\
        --model=path/to/bert-base-uncased --glove_embs=glove.42B.300d.txt

Rule (as huawei-noah/Pretrained-Language-Model TinyBERT/data_augmentation.py; library code in
`bertdistill/data/augment.py`): every alphabetic non-stopword word of a basic-tokenized sentence gets
up to `--top_k` candidates: a single-WordPiece word the MLM's best tokens (input `[CLS] masked
[SEP] original [SEP]`), a multi-piece word (every word when the model has no MLM head, as the
offline default all-MiniLM-L6-v2) its nearest neighbours in `--glove_embs`, else in the model's
own input embeddings (whole-word tokens only, so there multi-piece words keep their place).
Then `--augment_factor` passes each replace every such word with probability `--p` by a
uniformly drawn candidate; duplicates and copies of the original are dropped. Unlike the
reference, the masked copies of many sentences go through the MLM together, `--batch_size` rows
per forward pass (`--batch_size=1` is the reference's one pass per word).

A folder `--input` is read as `--task_name` and its column flags say (those of run_classifier.py,
e.g. `--task_name=tsv --labels=no,yes --text_a_column=question --text_b_column=answer`).
Sentence pairs: each text gets its own candidates and passes, as a single sentence would (the
first text with the original's generator, then the second), and the k-th new pair takes each
text's k-th new sentence, or its original when that text has fewer (`augment.pair_up`).

Output: a TSV with header `sentence<TAB>label` (pairs: `sentence<TAB>sentence_b<TAB>label`);
every original, then its new examples, all with the original's label (the teacher's logits are
added during distillation; read it with `bertdistill.distill.transfer_set.read_labelled_sentences`).

Shards: `--num_shards=N --shard_index=k` take the k-th contiguous slice of the originals; every
original is augmented with its own seed (`--seed`, its index), so the shards' outputs after
their header lines, concatenated in order, equal the unsharded output. The output is written to
a temporary file beside `--output` and renamed when complete.
"""

from __future__ import annotations

import os
import time

import keras
from absl import flags, logging

from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.data import augment, data

from bertdistill.distill import transfer_set

from bertdistill.models import checkpoints

from bertdistill.tasks import runner

from bertdistill.training import validation
from bertdistill.configs import TinyBertAugmentationConfig
from bertdistill.errors import FlagError
from bertdistill.files import atomic_output

script_flags.define_tinybert_augmentation_flags()
FLAGS = flags.FLAGS


def inputs(config: TinyBertAugmentationConfig) -> dict[str, str | None]:
    """{flag: path} of everything the run reads."""
    return {"input": config.augmentation.input, "model": config.model,
            "bert_config_file": config.augmentation.bert_config_file, "vocab_file": config.augmentation.vocab_file,
            "glove_embs": config.glove_embs}


def checked_config() -> TinyBertAugmentationConfig:
    """The run's config, its flag values refused when they cannot be meant (naming the flag) before
    anything is loaded."""
    script_flags.validate_tinybert_augmentation_flags(FLAGS)
    config = script_flags.tinybert_augmentation_config(FLAGS)
    validation.check_outputs({"output": config.augmentation.output}, inputs(config).values())
    if config.glove_embs and not os.path.isfile(config.glove_embs):
        raise FlagError("glove_embs", f"--glove_embs={config.glove_embs} does not exist")
    return config


def build_candidate_sources(config: TinyBertAugmentationConfig, pretrained: checkpoints.Pretrained,
                            vocab: dict[str, int]):
    """(MaskedLMCandidates or None, NeighbourReplacer or None) for the model and the config."""
    mlm = None
    if checkpoints.has_mlm_head(pretrained):
        logging.info("Single-piece words: the masked LM of %s, top %d, %d rows per pass",
                     pretrained.source, config.top_k, config.augmentation.batch_size)
        mlm = augment.MaskedLMCandidates(checkpoints.load_masked_lm(pretrained), vocab, config.top_k)
    else:
        logging.info("%s has no masked-LM head (cls/predictions): every word gets word-vector neighbours",
                     pretrained.source)
    if config.glove_embs:
        logging.info("Neighbours: %s (first %d vectors)", config.glove_embs, config.glove_max_words)
        neighbours = augment.NeighbourReplacer.from_word_vectors_file(config.glove_embs, k=config.top_k,
                                                                      max_words=config.glove_max_words)
    elif pretrained.input_embeddings() is None:
        raise FlagError("model", f"{pretrained.source} has no weights: give --model a pretrained checkpoint or "
                        "--glove_embs")
    else:
        logging.info("Neighbours: the model's input embeddings (whole-word tokens; multi-piece words keep their "
                     "place: pass --glove_embs to replace them)")
        neighbours = augment.NeighbourReplacer.from_token_embeddings(
            vocab, pretrained.input_embeddings(), k=config.top_k)
    return mlm, neighbours


def main(argv):
    del argv
    config = checked_config()
    run = config.augmentation
    keras.mixed_precision.set_global_policy("float32")
    pretrained = checkpoints.resolve_pretrained(config.model, run.bert_config_file, run.vocab_file)
    validation.max_seq_length_fits(run.max_seq_length, pretrained.config, f"the model {pretrained.source}")
    splitter = augment.WordSplitter(pretrained.tokenizer())
    processor = data.processor_from_config(run.data)
    examples = transfer_set.read_originals(run.input, processor, processor.get_labels(),
                                           on_error=run.data.on_error)[:run.max_examples]
    pairs = examples[0].text_b is not None
    runner.prepare_run(outputs={"output": run.output}, inputs=inputs(config))
    start, end = transfer_set.shard_bounds(len(examples), run.num_shards, run.shard_index)
    logging.info("Shard %d/%d: originals %d..%d of %d", run.shard_index, run.num_shards, start, end, len(examples))
    mlm, neighbours = build_candidate_sources(config, pretrained, splitter.vocab)

    began, rows = time.time(), 0
    with atomic_output(run.output) as out:
        out.write(transfer_set.plain_header(pairs))
        for chunk_start in range(start, end, run.chunk_size):
            chunk = examples[chunk_start:min(chunk_start + run.chunk_size, end)]
            texts = [e.text_a for e in chunk] + ([e.text_b for e in chunk] if pairs else [])
            candidates = augment.tinybert_candidates(texts, splitter, mlm=mlm, neighbours=neighbours,
                                                     batch_size=run.batch_size, max_seq_length=run.max_seq_length)
            rows_a, rows_b, labels = [], [], []
            for offset, example in enumerate(chunk):
                rng = augment.rng_for(run.seed, chunk_start + offset)
                new_a = augment.tinybert_augment_sentence(example.text_a, candidates[offset], run.augment_factor,
                                                          config.p, rng)
                if pairs:
                    new_b = augment.tinybert_augment_sentence(example.text_b, candidates[len(chunk) + offset],
                                                              run.augment_factor, config.p, rng)
                    new = [(example.text_a, example.text_b),
                           *augment.pair_up(example.text_a, example.text_b, new_a, new_b)]
                else:
                    new = [(text, None) for text in [example.text_a, *new_a]]
                rows_a += [a for a, _ in new]
                rows_b += [b for _, b in new]
                labels += [example.label] * len(new)
            out.write(transfer_set.format_rows(rows_a, labels, sentences_b=rows_b if pairs else None))
            rows += len(labels)
            done = chunk_start + len(chunk) - start
            seconds = time.time() - began
            logging.info("Augmented %d/%d originals: %d rows, %.1f originals/s", done, end - start, rows,
                         done / max(seconds, 1e-9))
    seconds = time.time() - began
    logging.info("Wrote %s: %d rows from %d originals in %.1f s", run.output, rows, end - start, seconds)


if __name__ == "__main__":
    entry.run(main)
