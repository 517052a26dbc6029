"""TinyBERT augmentation's candidate generation, batched against one MLM pass per word (the
reference's way), in the same run, on the first K SST-2 training sentences.

    python benchmarks/tinybert_augmentation_speed.py --model path/to/bert-base-uncased --sentences 200
    python benchmarks/tinybert_augmentation_speed.py --random_mlm_head --sentences 200

`--model` must carry a masked-LM head (`cls/predictions/*`). The offline default
(all-MiniLM-L6-v2) has none: `--random_mlm_head` then restores its encoder and adds a randomly
initialised head of its size, which times the MLM path faithfully but whose candidates are
meaningless (speed only). Prints sentences/s for both paths, the speed-up and whether both gave
the same candidates.
"""

import os
import time

import keras
from absl import app, flags

from bertdistill.cli.shared_flags import define_flag
from bertdistill.data import augment, data

from bertdistill.models import checkpoints
from bertdistill.models.bert import BertEncoder, BertMaskedLM
from bertdistill.data.tokenization import Tokenizer

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
define_flag("data_dir", default=os.path.join(SHARED, "data", "sst2"), help="GLUE SST-2 folder (train.tsv).")
flags.DEFINE_string("model", None, "Hugging Face folder or export folder (default: the offline all-MiniLM-L6-v2).")
flags.DEFINE_bool("random_mlm_head", False, "Use a randomly initialised MLM head on the model's encoder (speed only).")
flags.DEFINE_integer("sentences", 200, "First K training sentences.")
define_flag("batch_size", default=256, help="Rows per forward pass on the batched path.")
define_flag("top_k")
define_flag("max_seq_length", help="Tokens per MLM row.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    keras.mixed_precision.set_global_policy("float32")
    pretrained = checkpoints.resolve_pretrained(FLAGS.model)
    if checkpoints.has_mlm_head(pretrained):
        model, note = checkpoints.load_masked_lm(pretrained), "the checkpoint's own MLM head"
    elif FLAGS.random_mlm_head:
        model = BertMaskedLM(BertEncoder(pretrained.config))
        checkpoints.restore_weights(model, pretrained)
        note = "RANDOMLY INITIALISED MLM head on the real encoder: speed only, candidates are meaningless"
    else:
        raise app.UsageError(f"{pretrained.source} has no MLM head: pass --random_mlm_head to time the path anyway")
    do_lower_case = True if pretrained.do_lower_case is None else pretrained.do_lower_case
    tokenizer = Tokenizer(pretrained.vocab_file, do_lower_case)
    vocab, splitter = tokenizer.vocab, augment.WordSplitter(tokenizer)
    mlm = augment.MaskedLMCandidates(model, vocab, FLAGS.top_k)
    sentences = [e.text_a for e in data.get_processor("sst-2").get_train_examples(FLAGS.data_dir)[:FLAGS.sentences]]
    words = sum(len(c.candidates) for c in augment.tinybert_candidates(sentences, splitter))
    rows = sum(1 for words_, pieces in map(splitter.split, sentences) for i, word in enumerate(words_)
               if augment.is_valid_word(word) and len(pieces[i]) == 1)

    def run(batch_size):
        augment.tinybert_candidates(sentences[:8], splitter, mlm=mlm, batch_size=batch_size,
                                    max_seq_length=FLAGS.max_seq_length)  # warm-up
        start = time.perf_counter()
        result = augment.tinybert_candidates(sentences, splitter, mlm=mlm, batch_size=batch_size,
                                             max_seq_length=FLAGS.max_seq_length)
        return result, time.perf_counter() - start

    batched, batched_seconds = run(FLAGS.batch_size)
    single, single_seconds = run(1)
    same = sum(batched[i].candidates[w] == single[i].candidates[w] for i in range(len(sentences))
               for w in batched[i].candidates)
    print(f"model: {pretrained.source} ({pretrained.config.num_hidden_layers} layers, "
          f"hidden {pretrained.config.hidden_size}, vocab {pretrained.config.vocab_size}); {note}")
    print(f"{len(sentences)} SST-2 train sentences, {words} replaceable words, {rows} MLM rows "
          f"(single-piece words), top_k={FLAGS.top_k}, CPU threads: {os.cpu_count()}")
    print(f"batched ({FLAGS.batch_size} rows/pass): {batched_seconds:.2f} s, "
          f"{len(sentences) / batched_seconds:.1f} sentences/s")
    print(f"one pass per word:         {single_seconds:.2f} s, {len(sentences) / single_seconds:.1f} sentences/s")
    print(f"speed-up: {single_seconds / batched_seconds:.1f}x; identical candidate lists: {same}/{words}")


if __name__ == "__main__":
    app.run(main)
