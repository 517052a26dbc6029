"""TinyBERT task distillation: a fine-tuned teacher (an export folder of run_classifier.py) into a
smaller BERT, in two stages on (augmented) task data.

    python tinybert/task_distill.py --teacher_model=outputs/teacher/export \\
        --student_config=tinybert/configs/student_3l_384.json --data_dir=../shared/data/sst2 \\
        --augmented_file=outputs/augmented.tsv --output_dir=outputs/tinybert

Stage 1 (`intermediate`): embeddings, hidden states and pre-softmax attention scores, matched as
`--layer_map` says (a rule: uniform, last, skip; or a JSON file), teacher online, constant
learning rate. Stage 2 (`prediction`): soft cross-entropy against the teacher's logits at
`--temperature` (from the transfer set when it has logit columns, else the teacher online; with
`--hard_label_weight` mixing in the gold labels: 1.0 is plain fine-tuning), warm-up and linear
decay, best-by-dev kept. `--stage=both` (default) runs stage 1 then stage 2 in one
`--output_dir`; each stage has its own folder (`intermediate/`, `prediction/`: checkpoints,
TensorBoard, best), so a killed run resumes in the right stage at the right step, and
`--stage=prediction` after `--stage=intermediate` continues from stage 1's student
(`intermediate/student.weights.h5`, written when stage 1 ends). The best student is exported
to `<output_dir>/export` like the teacher (SavedModel, ONNX, INT8 ONNX, Hugging Face files);
the projections are training-only and dropped. `--dry_run` prints the resolved layer map and
the parameter counts, and exits.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os

import keras
import numpy as np
from absl import flags, logging

from bertdistill import (checkpoints, errors, export, int8_gate, layer_map, pipeline, runner, script_flags, trainer,
                         transfer_set, validation)
from bertdistill.bert import BertConfig
from bertdistill.distribute import is_chief, set_precision_policy
from bertdistill.errors import ConfigError, FlagError
from bertdistill.flags import on_error, processor_from_flags, split_file
from bertdistill.tokenization import Tokenizer, piece_id_map
from bertdistill.tinybert import (IntermediateTask, PredictionTask, distillation_classifier, init_from_teacher,
                                  parameter_count, with_distillation_outputs)

script_flags.define_task_distill_flags()
FLAGS = flags.FLAGS

def student_source(teacher: checkpoints.Teacher) -> tuple[BertConfig, checkpoints.Pretrained | None]:
    """The student's config, and its pretrained weights when --student_model is given (with its
    own vocabulary, see `student_tokenizer`). A --student_config student reads the teacher's
    tokens and takes the teacher's vocab_size."""
    layers = script_flags.student_layers(FLAGS)
    if FLAGS.student_model:
        pretrained = checkpoints.resolve_pretrained(FLAGS.student_model)
        if layers is not None:
            try:
                pretrained = checkpoints.select_layers(pretrained, layers)
            except ConfigError as e:
                raise FlagError("student_layers", f"--student_layers: {e}") from None
        return pretrained.config, pretrained
    config = BertConfig.from_json_file(FLAGS.student_config)
    vocab_size = teacher.model.encoder.config.vocab_size
    if config.vocab_size != vocab_size:
        logging.info("The student takes the teacher's vocabulary: vocab_size %d (%s says %d)", vocab_size,
                     FLAGS.student_config, config.vocab_size)
        config = dataclasses.replace(config, vocab_size=vocab_size)
    return config, None


def student_tokenizer(teacher: checkpoints.Teacher, pretrained: checkpoints.Pretrained | None) -> Tokenizer:
    """The teacher's tokenizer, or a pretrained student's own when its vocabulary differs."""
    if pretrained is None or filecmp.cmp(pretrained.vocab_file, teacher.tokenizer.vocab_file, shallow=False):
        return teacher.tokenizer
    do_lower_case = teacher.tokenizer.do_lower_case if pretrained.do_lower_case is None else pretrained.do_lower_case
    return Tokenizer(pretrained.vocab_file, do_lower_case)


def check_cross_vocabulary(teacher: checkpoints.Teacher, tokenizer: Tokenizer, has_logits: bool,
                           has_pairs: bool) -> None:
    """What a student with its own vocabulary needs: stage 2 from the transfer set's teacher
    logits (the teacher cannot read the student's ids), single sentences (pairs put other
    special tokens between the texts, so positions differ), and the same casing."""
    if tokenizer is teacher.tokenizer:
        return
    if has_pairs:
        raise ConfigError("a student with its own vocabulary learns from single sentences only: the teacher's "
                          "and the student's sentence pairs are not aligned position by position")
    if tokenizer.do_lower_case != teacher.tokenizer.do_lower_case:
        raise FlagError("student_model", f"--student_model={FLAGS.student_model} lower-cases "
                        f"({tokenizer.do_lower_case}) unlike the teacher ({teacher.tokenizer.do_lower_case})")
    if FLAGS.stage in ("prediction", "both") and not has_logits and FLAGS.hard_label_weight < 1.0:
        raise FlagError("augmented_file", "a student with its own vocabulary learns stage 2 from the teacher's logits "
                        "in the transfer set: pass --augmented_file=<generate_dataset.py output> (with logit columns)")


def check_student(teacher: checkpoints.Teacher, config: BertConfig) -> None:
    for name, config_of in (("the teacher", teacher.model.encoder.config), ("the student", config)):
        validation.max_seq_length_fits(FLAGS.max_seq_length, config_of, name)


def dry_run(teacher: checkpoints.Teacher, student_config: BertConfig, matches) -> None:
    student = distillation_classifier(student_config, len(teacher.labels), teacher.model.pooling)
    projections = layer_map.FeatureProjections(matches, teacher.model.encoder.config, student_config)
    print(layer_map.describe(matches, teacher.model.encoder.config, student_config))
    print(f"teacher parameters: {parameter_count(teacher.model):,}")
    print(f"student parameters: {parameter_count(student):,} (+ {parameter_count(projections):,} in "
          "training-only projections)")
    if FLAGS.student_model is None and FLAGS.student_init == "teacher_layers":
        print("student layers start from teacher layers "
              f"{layer_map.teacher_layers_for_init(matches, teacher.model.encoder.config, student_config)}")


def main(argv):
    del argv
    script_flags.validate_task_distill_flags(FLAGS)
    stages = script_flags.tinybert_stages(FLAGS)
    settings = {stage: script_flags.tinybert_stage_settings(FLAGS, stage) for stage in stages}
    strategy = runner.start(FLAGS, lock=not FLAGS.dry_run)
    set_precision_policy(FLAGS.mixed_precision)
    keras.utils.set_random_seed(FLAGS.seed)

    validation.model_path("teacher_model", FLAGS.teacher_model)
    validation.model_path("student_model", FLAGS.student_model)
    teacher = checkpoints.load_teacher(FLAGS.teacher_model)
    student_config, student_pretrained = student_source(teacher)
    tokenizer = student_tokenizer(teacher, student_pretrained)
    check_student(teacher, student_config)
    matches = layer_map.resolve_layer_map(FLAGS.layer_map, teacher.model.encoder.config, student_config)
    if FLAGS.student_model is None and FLAGS.student_init == "teacher_layers":
        layer_map.check_init_from_teacher(teacher.model.encoder.config, student_config)
    if FLAGS.dry_run:
        dry_run(teacher, student_config, matches)
        return

    processor = processor_from_flags(FLAGS)
    if processor.get_labels() != teacher.labels:
        raise ConfigError(f"{FLAGS.teacher_model}/labels.json {teacher.labels} differs from task "
                          f"{FLAGS.task_name}'s labels {processor.get_labels()}")
    labels = teacher.labels
    if FLAGS.augmented_file:
        train_examples, teacher_logits = transfer_set.read_labelled_sentences(FLAGS.augmented_file, labels,
                                                                              on_error=on_error(FLAGS))
    else:
        train_examples, teacher_logits = processor.get_train_examples(FLAGS.data_dir), None
    dev_examples = processor.get_dev_examples(FLAGS.data_dir)
    reads = teacher.text_inputs or processor.text_inputs  # an export says what the teacher reads
    for what, examples in ((FLAGS.augmented_file and f"--augmented_file={FLAGS.augmented_file}", train_examples),
                           (f"the dev set of --task_name={FLAGS.task_name}", dev_examples)):
        transfer_set.check_text_inputs(examples, reads, what or f"the train set of --task_name={FLAGS.task_name}",
                                       f"the teacher {errors.shorten(FLAGS.teacher_model)}")

    check_cross_vocabulary(teacher, tokenizer, has_logits=teacher_logits is not None,
                           has_pairs=any(e.text_b is not None for e in [*train_examples, *dev_examples]))

    def features(examples, of=tokenizer):
        return pipeline.convert_examples_to_features(examples, of, labels, FLAGS.max_seq_length)

    train_features, dev_features = features(validation.non_empty(train_examples, "the training set")), \
        features(validation.non_empty(dev_examples, "the dev set"))
    teacher_features = None  # the training set in the teacher's vocabulary, for stage 1
    if tokenizer is not teacher.tokenizer and "intermediate" in stages:
        teacher_features = features(train_examples, teacher.tokenizer)
        bad = pipeline.misaligned(teacher_features, train_features,
                                  piece_id_map(teacher.tokenizer, tokenizer))
        if bad is not None:
            raise ConfigError(f"training example {train_examples[bad].guid} ({errors.shorten(train_examples[bad].text_a)!r}) "
                              "is not the same word pieces in the teacher's and the student's vocabularies: stage 1 "
                              "matches them position by position")
    runner.prepare_run(
        FLAGS, data_files=[FLAGS.augmented_file or split_file(FLAGS, "train"), split_file(FLAGS, "dev")],
        model_config={**student_config.to_dict(), "labels": labels},
        inputs={"teacher_model": FLAGS.teacher_model, "student_model": FLAGS.student_model,
                "student_config": FLAGS.student_config, "data_dir": FLAGS.data_dir,
                "augmented_file": FLAGS.augmented_file, "layer_map": layer_map.layer_map_file(FLAGS.layer_map)},
        ignore_flags=("stage", "dry_run", "do_export"), chief=is_chief(strategy))
    stage_dir = {stage: os.path.join(FLAGS.output_dir, stage) for stage in ("intermediate", "prediction")}
    stage1_student = os.path.join(stage_dir["intermediate"], "student.weights.h5")

    with strategy.scope():
        student = distillation_classifier(student_config, len(labels), teacher.model.pooling)
        if student_pretrained is not None:
            checkpoints.restore_weights(student.encoder, student_pretrained)
        elif FLAGS.student_init == "teacher_layers":
            init_from_teacher(student, teacher.model, layer_map.teacher_layers_for_init(
                matches, teacher.model.encoder.config, student_config))
    logging.info("Teacher %d parameters, student %d; %d training examples%s", parameter_count(teacher.model),
                 parameter_count(student), len(train_features),
                 " with teacher logits" if teacher_logits is not None else "")

    if "intermediate" in stages:
        epochs, rate = settings["intermediate"]
        stage_features, stage_teacher_features = train_features, teacher_features
        if FLAGS.intermediate_max_examples and FLAGS.intermediate_max_examples < len(train_features):
            chosen = np.sort(np.random.default_rng(FLAGS.seed).choice(len(train_features),
                                                                      FLAGS.intermediate_max_examples, replace=False))
            stage_features = train_features.select(chosen)
            stage_teacher_features = teacher_features.select(chosen) if teacher_features is not None else None
        with strategy.scope():
            online_teacher = with_distillation_outputs(teacher.model)
            projections = layer_map.FeatureProjections(matches, teacher.model.encoder.config, student_config)
        task = IntermediateTask(online_teacher.encoder, student, student.encoder, matches, projections)
        logging.info("Stage 1 (intermediate layers) on %d examples:\n%s", len(stage_features),
                     layer_map.describe(matches, teacher.model.encoder.config, student_config))
        runner.train_from_flags(
            task, strategy, FLAGS, output_dir=stage_dir["intermediate"], num_train_epochs=epochs,
            learning_rate=rate, constant_learning_rate=True, eval_dataset=None,
            steps_per_epoch=pipeline.num_batches(stage_features, batch_size=FLAGS.train_batch_size,
                                                 is_training=True, max_seq_length=FLAGS.max_seq_length),
            train_dataset_fn=lambda epoch: pipeline.make_dataset(
                stage_features, batch_size=FLAGS.train_batch_size, is_training=True, seed=FLAGS.seed + epoch,
                max_seq_length=FLAGS.max_seq_length, static_padding=FLAGS.use_xla,
                teacher_features=stage_teacher_features))
        if is_chief(strategy):
            layer_map.write_layer_map(matches, os.path.join(stage_dir["intermediate"], layer_map.LAYER_MAP_FILE))
            trainer.save_model_weights(student, stage1_student)

    if "prediction" in stages:
        if os.path.exists(stage1_student):
            student.load_weights(stage1_student)
            logging.info("Stage 2 starts from stage 1's student: %s", stage1_student)
        epochs, rate = settings["prediction"]
        extras = {"teacher_logits": teacher_logits} if teacher_logits is not None else None
        online = teacher.model if tokenizer is teacher.tokenizer else None  # it cannot read the student's ids
        task = PredictionTask(student, online, FLAGS.temperature, FLAGS.hard_label_weight)
        eval_dataset = pipeline.make_dataset(dev_features, batch_size=FLAGS.eval_batch_size, is_training=False)
        runner.train_from_flags(
            task, strategy, FLAGS, output_dir=stage_dir["prediction"], num_train_epochs=epochs, learning_rate=rate,
            eval_dataset=eval_dataset,
            steps_per_epoch=pipeline.num_batches(train_features, batch_size=FLAGS.train_batch_size,
                                                 is_training=True, max_seq_length=FLAGS.max_seq_length),
            train_dataset_fn=lambda epoch: pipeline.make_dataset(
                train_features, batch_size=FLAGS.train_batch_size, is_training=True, seed=FLAGS.seed + epoch,
                max_seq_length=FLAGS.max_seq_length, static_padding=FLAGS.use_xla, extras=extras))
        best = trainer.read_best(stage_dir["prediction"])
        runner.evaluate_to_file(student, eval_dataset, FLAGS.output_dir, strategy,
                                global_step=best["global_step"] if best else 0, num_examples=len(dev_features))
        if FLAGS.do_export and is_chief(strategy):
            x, _ = next(iter(pipeline.make_dataset(dev_features, batch_size=8, is_training=False)))
            export.export_bert_classifier(
                student, os.path.join(FLAGS.output_dir, "export"), vocab_file=tokenizer.vocab_file,
                labels=labels, do_lower_case=tokenizer.do_lower_case,
                sample={k: v.numpy() for k, v in x.items()},
                info={"model": "tinybert", "task_name": FLAGS.task_name, **processor.input_record(),
                      "max_seq_length": FLAGS.max_seq_length,
                      "teacher": os.path.abspath(FLAGS.teacher_model), "best": best,
                      "stages": stages, "layer_map": layer_map.layer_map_to_json(matches)})
            int8_gate.run_int8_gate_on_examples(os.path.join(FLAGS.output_dir, "export"), dev_examples,
                                                max_drop=FLAGS.int8_max_drop)


if __name__ == "__main__":
    errors.run(main)
