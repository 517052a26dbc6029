"""Fine-tunes, evaluates, predicts with and exports a BERT classifier (the teacher).

Flags mirror Google's run_classifier.py; see `bertdistill/flags.py` for the common ones.

    python bert_finetune/run_classifier.py --task_name=sst-2 --do_train --do_eval \\
        --data_dir=../shared/data/sst2 --output_dir=outputs/teacher

Outputs in `--output_dir`: `checkpoints/` (resumable), `tensorboard/`, `best/`,
`eval_results.txt`, `test_results.tsv`, and `export/`: a self-contained folder (Hugging Face
files, SavedModel, ONNX, INT8 ONNX, labels) usable again as `--init_checkpoint`.
`--do_eval`/`--do_predict`/`--do_export` without `--do_train` use the model trained in
`--output_dir` (its best-by-dev weights, else its latest checkpoint), else a fine-tuned
`--init_checkpoint`; `--do_export` alone re-exports a finished run with the current exporter.
"""

from __future__ import annotations

import os

import keras
from absl import flags, logging

from bertdistill import checkpoints, errors, export, int8_gate, pipeline, runner, script_flags, trainer, validation
from bertdistill.bert import BertClassifier
from bertdistill.distribute import is_chief, set_precision_policy
from bertdistill.encoders import build_encoder
from bertdistill.errors import FlagError, UserError
from bertdistill.export_format import LABELS
from bertdistill.flags import processor_from_flags, split_file
from bertdistill.tokenization import Tokenizer, check_casing

script_flags.define_run_classifier_flags()
FLAGS = flags.FLAGS


def validate_flags(pretrained: checkpoints.Pretrained) -> None:
    """Fails fast, as run_classifier does, before any data is read or model built."""
    if pretrained.do_lower_case is not None and pretrained.do_lower_case != FLAGS.do_lower_case:
        raise FlagError("do_lower_case", f"--do_lower_case={FLAGS.do_lower_case} but {pretrained.source} was "
                        f"trained with do_lower_case={pretrained.do_lower_case}")
    name = os.path.basename(os.path.dirname(pretrained.source)).lower()  # Google: .../uncased_L-12_H-768_A-12/
    if name.startswith(("uncased_", "cased_")) and name.startswith("uncased_") != FLAGS.do_lower_case:
        raise FlagError("do_lower_case", f"--do_lower_case={FLAGS.do_lower_case} is inconsistent with "
                        f"{pretrained.source}")
    validation.max_seq_length_fits(FLAGS.max_seq_length, pretrained.config, pretrained.source)


def check_labels(pretrained: checkpoints.Pretrained, labels: list[str]) -> None:
    """A fine-tuned --init_checkpoint (an export folder: labels.json) must classify the task's labels."""
    path = os.path.join(pretrained.source, LABELS)
    if "output_weights" not in pretrained.weights or not os.path.isfile(path):
        return
    own = errors.read_json(path, "labels file")
    if not isinstance(own, list) or [str(label) for label in own] != labels:
        raise FlagError("init_checkpoint", f"--init_checkpoint={pretrained.source} classifies {errors.shorten(own)} "
                        f"(its labels.json) but --task_name={FLAGS.task_name} has labels {labels}: pass the task "
                        "(or --labels) it was trained on")


def _features(examples, tokenizer, labels):
    return pipeline.convert_examples_to_features(examples, tokenizer, labels, FLAGS.max_seq_length)


def _eval_dataset(features, batch_size):
    return pipeline.make_dataset(features, batch_size=batch_size, is_training=False,
                                 static_padding=FLAGS.use_xla, max_seq_length=FLAGS.max_seq_length)


def train(model, strategy, train_features, eval_features) -> None:
    """Fits the model (resuming if checkpoints exist) and leaves the best-by-dev weights in it."""
    steps_per_epoch = pipeline.num_batches(train_features, batch_size=FLAGS.train_batch_size, is_training=True,
                                           max_seq_length=FLAGS.max_seq_length)
    multipliers = None
    if FLAGS.layerwise_lr_decay != 1.0:
        from bertdistill.optimization import layerwise_lr_multipliers
        multipliers = layerwise_lr_multipliers(model.trainable_variables, model.encoder.config.num_hidden_layers,
                                               FLAGS.layerwise_lr_decay)
    logging.info("Training on %d examples", len(train_features))
    runner.train_from_flags(
        trainer.ClassifierTask(model), strategy, FLAGS, steps_per_epoch=steps_per_epoch, lr_multipliers=multipliers,
        train_dataset_fn=lambda epoch: pipeline.make_dataset(
            train_features, batch_size=FLAGS.train_batch_size, is_training=True, seed=FLAGS.seed + epoch,
            max_seq_length=FLAGS.max_seq_length, static_padding=FLAGS.use_xla),
        eval_dataset=_eval_dataset(eval_features, FLAGS.eval_batch_size) if eval_features else None)


def load_trained(model, pretrained: checkpoints.Pretrained) -> int:
    """For --do_eval/--do_predict alone: the model trained in --output_dir (best, else latest
    checkpoint), else a fine-tuned --init_checkpoint. Returns the global step of what was loaded."""
    best = trainer.read_best(FLAGS.output_dir)
    if trainer.restore_best_weights(model, FLAGS.output_dir):
        logging.info("Using the best dev model of %s (step %d)", FLAGS.output_dir, best["global_step"])
        return best["global_step"]
    step = trainer.restore_from_checkpoint(model, os.path.join(FLAGS.output_dir, "checkpoints"))
    if step is not None:
        logging.info("Using the latest checkpoint of %s (step %d)", FLAGS.output_dir, step)
        return step
    if FLAGS.init_checkpoint and "output_weights" in pretrained.weights:
        logging.info("Using the fine-tuned model %s", pretrained.source)
        return 0
    raise UserError(f"--output_dir={FLAGS.output_dir} holds no trained model and --init_checkpoint is not a "
                    "fine-tuned classifier: add --do_train, or pass an export folder as --init_checkpoint")


def export_model(model, tokenizer, processor, sample_features, dev_examples) -> None:
    """Writes <output_dir>/export: Hugging Face files, SavedModel, ONNX, INT8 ONNX, labels; then
    the INT8 gate on the dev set."""
    x, _ = next(iter(_eval_dataset(sample_features, 8)))
    folder = os.path.join(FLAGS.output_dir, "export")
    export.export_bert_classifier(
        model, folder, vocab_file=tokenizer.vocab_file, labels=processor.get_labels(),
        do_lower_case=FLAGS.do_lower_case, sample={k: v.numpy() for k, v in x.items()},
        info={"model": "bert_classifier", "task_name": FLAGS.task_name, **processor.input_record(),
              "max_seq_length": FLAGS.max_seq_length,
              "best": trainer.read_best(FLAGS.output_dir)})
    int8_gate.run_int8_gate_on_examples(folder, dev_examples, max_drop=FLAGS.int8_max_drop)


def main(argv):
    del argv
    script_flags.validate_run_classifier_flags(FLAGS)
    exporting = FLAGS.do_export and (FLAGS.do_train or FLAGS["do_export"].present)
    validation.model_path("init_checkpoint", FLAGS.init_checkpoint)
    strategy = runner.start(FLAGS)
    pretrained = checkpoints.resolve_pretrained(FLAGS.init_checkpoint, FLAGS.bert_config_file, FLAGS.vocab_file)
    validate_flags(pretrained)
    processor = processor_from_flags(FLAGS)
    labels = processor.get_labels()
    check_labels(pretrained, labels)
    tokenizer = Tokenizer(pretrained.vocab_file, FLAGS.do_lower_case)
    # Every split the run needs is read (and checked) before any model is built or trained.
    examples_of = {}

    def features(split, read):
        examples = validation.non_empty(read(FLAGS.data_dir), split_file(FLAGS, split) or f"tfds {split} split")
        examples_of[split] = examples
        return _features(examples, tokenizer, labels)

    train_features = features("train", processor.get_train_examples) if FLAGS.do_train else None
    eval_features = features("dev", processor.get_dev_examples) if FLAGS.do_eval or FLAGS.do_train or exporting \
        else None
    test_features = features("test", processor.get_test_examples) if FLAGS.do_predict else None
    split, examples = next(iter(examples_of.items()))
    check_casing(tokenizer, [e.text_a for e in examples], split_file(FLAGS, split) or f"the tfds {split} split")

    set_precision_policy(FLAGS.mixed_precision)
    pooling = FLAGS.classifier_pooling
    if pretrained.classifier_pooling and not FLAGS["classifier_pooling"].present:
        pooling = pretrained.classifier_pooling
    runner.prepare_run(
        FLAGS, data_files=[split_file(FLAGS, "train"), split_file(FLAGS, "dev")] if FLAGS.do_train else [],
        model_config={**pretrained.config.to_dict(), "labels": labels, "classifier_pooling": pooling},
        inputs={"data_dir": FLAGS.data_dir, "init_checkpoint": FLAGS.init_checkpoint,
                "bert_config_file": FLAGS.bert_config_file, "vocab_file": FLAGS.vocab_file},
        train=FLAGS.do_train, chief=is_chief(strategy))
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        model = BertClassifier(build_encoder(pretrained.config), num_labels=len(labels), pooling=pooling)
        if pretrained.weights:
            checkpoints.restore_weights(model, pretrained)
        else:
            logging.info("No --init_checkpoint: training from a random initialisation of %s",
                         FLAGS.bert_config_file)
    if FLAGS.do_train:
        train(model, strategy, train_features, eval_features if FLAGS.do_eval else None)
        best = trainer.read_best(FLAGS.output_dir)
        step = best["global_step"] if best else runner.num_train_steps(
            pipeline.num_batches(train_features, batch_size=FLAGS.train_batch_size, is_training=True,
                                 max_seq_length=FLAGS.max_seq_length), FLAGS.num_train_epochs)
    else:
        step = load_trained(model, pretrained)
    if FLAGS.do_eval:
        runner.evaluate_to_file(model, _eval_dataset(eval_features, FLAGS.eval_batch_size), FLAGS.output_dir,
                                strategy, global_step=step, num_examples=len(eval_features))
    if FLAGS.do_predict:
        runner.predict_to_file(model, _eval_dataset(test_features, FLAGS.predict_batch_size), FLAGS.output_dir,
                               strategy)
    if exporting and is_chief(strategy):
        export_model(model, tokenizer, processor, eval_features, examples_of["dev"])


if __name__ == "__main__":
    errors.run(main)
