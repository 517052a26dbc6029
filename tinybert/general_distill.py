"""TinyBERT general distillation: intermediate-layer distillation from a pre-trained (not
fine-tuned) BERT on plain text, giving a student a pre-trained start for task_distill.py.

    python tinybert/general_distill.py --corpus=corpus.txt \\
        --student_config=tinybert/configs/student_4l_312.json --output_dir=outputs/general \\
        --max_steps=2000
    python tinybert/task_distill.py --student_model=outputs/general/student ...

The corpus is one sentence per line (blank lines between documents are skipped), one or more
files (comma-separated or a glob), streamed through tf.data: never loaded whole, shuffled in a
seeded window of `--shuffle_buffer` lines, each sentence one example (truncated at
`--max_seq_length`). The teacher defaults to the offline all-MiniLM-L6-v2. Training is
resumable (`<output_dir>/checkpoints`, a restarted run skips the batches already seen) and
writes the student as a Hugging Face folder, `<output_dir>/student`, when it ends.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf
from absl import flags, logging

from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.distill import layer_map

from bertdistill.models import checkpoints

from bertdistill.tasks import runner

from bertdistill.training import validation
from bertdistill.models.bert import BertConfig, BertEncoder
from bertdistill.models.encoders import build_encoder
from bertdistill.training.distribute import is_chief, set_precision_policy
from bertdistill.errors import FlagError, MissingFileError
from bertdistill.export_format import bert_features
from bertdistill.files import atomic_path
from bertdistill.distill.tinybert import IntermediateTask, parameter_count
from bertdistill.data.tokenization import Tokenizer

script_flags.define_general_distill_flags()
FLAGS = flags.FLAGS


def corpus_files(patterns: list[str]) -> list[str]:
    files = sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)})
    if not files:
        raise MissingFileError(f"--corpus={','.join(patterns)}: no such file")
    empty = [path for path in files if os.path.getsize(path) == 0]
    if empty:
        raise FlagError("corpus", f"--corpus: {empty[0]} is empty")
    if not any(_has_text(path) for path in files):
        raise FlagError("corpus", f"--corpus={','.join(patterns)}: every line is blank; expected one sentence per line")
    return files


def _has_text(path: str) -> bool:
    """True when a line of `path` holds more than white space (read until the first such line)."""
    with open(path, "rb") as f:
        return any(line.strip() for line in f)


def text_dataset(files: list[str], tokenizer: Tokenizer, *, batch_size: int, max_seq_length: int,
                 seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    """Endless `(x, y)` batches of tokenized corpus sentences (y: zeros), streamed and seeded."""

    def encode(lines):
        texts = [line.decode("utf-8", errors="replace") for line in lines.numpy()]
        ids, types = tokenizer.encode_batch(texts, None, max_seq_length)
        features = bert_features(ids, types, tokenizer.pad_id)
        return features["input_ids"], features["attention_mask"], features["token_type_ids"]

    def to_features(lines):
        ids, mask, types = tf.py_function(encode, [lines], [tf.int32, tf.int32, tf.int32])
        for tensor in (ids, mask, types):
            tensor.set_shape([None, None])
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, tf.zeros_like(ids[:, 0])

    lines = tf.data.TextLineDataset(files).map(tf.strings.strip).filter(lambda line: tf.strings.length(line) > 0)
    return (lines.repeat().shuffle(shuffle_buffer, seed=seed).batch(batch_size)
            .map(to_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE))


def main(argv):
    del argv
    script_flags.validate_general_distill_flags(FLAGS)
    config = script_flags.general_distill_config(FLAGS)
    run = config.run
    strategy = runner.start(run)
    files = corpus_files(list(config.corpus))
    pretrained = checkpoints.resolve_pretrained(config.teacher_model)
    student_config = BertConfig.from_json_file(config.student_config)
    if student_config.vocab_size != pretrained.config.vocab_size:
        logging.info("The student takes the teacher's vocabulary: vocab_size %d (%s says %d)",
                     pretrained.config.vocab_size, config.student_config, student_config.vocab_size)
        student_config = dataclasses.replace(student_config, vocab_size=pretrained.config.vocab_size)
    for name, model_config in (("the teacher", pretrained.config), ("the student", student_config)):
        validation.max_seq_length_fits(config.max_seq_length, model_config, name)
    matches = layer_map.resolve_layer_map(config.layer_map, pretrained.config, student_config)
    if config.student_init == "teacher_layers":
        layer_map.check_init_from_teacher(pretrained.config, student_config)
    set_precision_policy(run.mixed_precision)
    keras.utils.set_random_seed(run.seed)
    runner.prepare_run(run, data_files=files, model_config=student_config.to_dict(),
                       inputs={"teacher_model": config.teacher_model, "student_config": config.student_config,
                               "layer_map": layer_map.layer_map_file(config.layer_map)},
                       ignore_settings=("max_steps",), chief=is_chief(strategy))
    tokenizer = pretrained.tokenizer()
    with strategy.scope():
        teacher = build_encoder(pretrained.config, output_hidden_states=True, output_attentions=True)
        checkpoints.restore_weights(teacher, pretrained)
        student = BertEncoder(student_config, output_hidden_states=True, output_attentions=True)
        if config.student_init == "teacher_layers":
            layer_map.copy_teacher_layers(teacher, student,
                                          layer_map.teacher_layers_for_init(matches, pretrained.config, student_config))
        projections = layer_map.FeatureProjections(matches, pretrained.config, student_config)
    logging.info("General distillation from %s (%d parameters) into %d parameters on %s:\n%s", pretrained.source,
                 parameter_count(teacher), parameter_count(student), files,
                 layer_map.describe(matches, pretrained.config, student_config))
    runner.train(
        IntermediateTask(teacher, student, student, matches, projections), strategy, config.train,
        run, eval_dataset=None,
        steps_per_epoch=config.max_steps, num_train_epochs=1.0,
        train_dataset_fn=lambda epoch: text_dataset(files, tokenizer, batch_size=config.train.train_batch_size,
                                                    max_seq_length=config.max_seq_length, seed=run.seed,
                                                    shuffle_buffer=config.shuffle_buffer))
    if is_chief(strategy):
        folder = os.path.join(run.output_dir, "student")
        with atomic_path(folder) as tmp:
            checkpoints.save_hf_encoder(student, tmp, pretrained.vocab_file, tokenizer.do_lower_case)
            layer_map.write_layer_map(matches, os.path.join(tmp, layer_map.LAYER_MAP_FILE))
        logging.info("Student written to %s (use it as task_distill.py --student_model)", folder)


if __name__ == "__main__":
    entry.run(main)
