"""Fine-tunes, evaluates, predicts with and exports a BERT classifier (the teacher).

Flags mirror Google's run_classifier.py; see `bertdistill/training.py` for the full list.

    python bert_finetune/run_classifier.py --task_name=sst-2 --do_train --do_eval \\
        --data_dir=../shared/data/sst2 --output_dir=outputs/teacher

Outputs in `--output_dir`: `checkpoints/` (resumable), `tensorboard/`, `best/`,
`eval_results.txt`, `test_results.tsv`, and `export/`: a self-contained folder (Hugging Face
files, SavedModel, ONNX, INT8 ONNX, labels) usable again as `--init_checkpoint`.
"""

from __future__ import annotations

import json
import os

import keras
from absl import app, flags, logging

from bertdistill import checkpoints, data, export, pipeline, training
from bertdistill.bert import BertClassifier, BertEncoder
from bertdistill.tokenization import Tokenizer

training.define_common_flags()
flags.DEFINE_bool("do_export", True, "After training, write <output_dir>/export (SavedModel, ONNX, INT8).")
flags.DEFINE_enum("classifier_pooling", "cls", ["cls", "mean"],
                  "Classify the [CLS] pooler output or the mean of the token states (an export "
                  "folder's own choice is used unless this flag is given).")
flags.DEFINE_bool("skip_bad_rows", False, "Skip (and count) malformed data rows instead of failing.")
FLAGS = flags.FLAGS


def validate_flags(pretrained: checkpoints.Pretrained) -> None:
    """Fails fast, as run_classifier does, before any data is read or model built."""
    if pretrained.do_lower_case is not None and pretrained.do_lower_case != FLAGS.do_lower_case:
        raise app.UsageError(f"--do_lower_case={FLAGS.do_lower_case} but {pretrained.source} was trained with "
                             f"do_lower_case={pretrained.do_lower_case}")
    name = os.path.basename(os.path.dirname(pretrained.source)).lower()  # Google: .../uncased_L-12_H-768_A-12/
    if name.startswith(("uncased_", "cased_")) and name.startswith("uncased_") != FLAGS.do_lower_case:
        raise app.UsageError(f"--do_lower_case={FLAGS.do_lower_case} is inconsistent with {pretrained.source}")
    if FLAGS.max_seq_length > pretrained.config.max_position_embeddings:
        raise app.UsageError(f"--max_seq_length={FLAGS.max_seq_length} exceeds the model's "
                             f"max_position_embeddings={pretrained.config.max_position_embeddings}")


def _features(examples, tokenizer, labels):
    return pipeline.convert_examples_to_features(examples, tokenizer, labels, FLAGS.max_seq_length)


def _eval_dataset(features, batch_size):
    return pipeline.make_dataset(features, batch_size=batch_size, is_training=False,
                                 static_padding=FLAGS.use_xla, max_seq_length=FLAGS.max_seq_length)


def train(model, strategy, processor, tokenizer, labels, eval_features) -> None:
    """Fits the model (resuming if checkpoints exist) and leaves the best-by-dev weights in it."""
    train_features = _features(processor.get_train_examples(FLAGS.data_dir), tokenizer, labels)
    steps_per_epoch = pipeline.num_batches(train_features, batch_size=FLAGS.train_batch_size, is_training=True,
                                           max_seq_length=FLAGS.max_seq_length)
    num_train_steps = max(1, int(steps_per_epoch * FLAGS.num_train_epochs))
    with strategy.scope():
        multipliers = None
        if FLAGS.layerwise_lr_decay != 1.0:
            multipliers = training.layerwise_lr_multipliers(model.trainable_variables,
                                                            model.encoder.config.num_hidden_layers,
                                                            FLAGS.layerwise_lr_decay)
        optimizer = training.create_optimizer(
            learning_rate=FLAGS.learning_rate, num_train_steps=num_train_steps,
            num_warmup_steps=int(num_train_steps * FLAGS.warmup_proportion), weight_decay=FLAGS.weight_decay,
            max_grad_norm=FLAGS.max_grad_norm, lr_multipliers=multipliers)
        training.compile_classifier(model, optimizer, use_xla=FLAGS.use_xla)
    training.write_hparams(os.path.join(FLAGS.output_dir, "tensorboard"), FLAGS.flag_values_dict())
    logging.info("Training on %d examples: %d steps/epoch, %d steps", len(train_features), steps_per_epoch,
                 num_train_steps)
    eval_dataset = _eval_dataset(eval_features, FLAGS.eval_batch_size) if eval_features else None
    training.run_training(model, lambda epoch: pipeline.make_dataset(
        train_features, batch_size=FLAGS.train_batch_size, is_training=True, seed=FLAGS.seed + epoch,
        max_seq_length=FLAGS.max_seq_length), output_dir=FLAGS.output_dir, steps_per_epoch=steps_per_epoch,
                          num_train_steps=num_train_steps, save_checkpoints_steps=FLAGS.save_checkpoints_steps,
                          eval_dataset=eval_dataset, early_stopping_patience=FLAGS.early_stopping_patience)
    if training.restore_best_weights(model, FLAGS.output_dir):
        logging.info("Kept the best dev model: %s", training.read_best(FLAGS.output_dir))


def evaluate(model, features) -> dict:
    """Dev accuracy and loss, written to eval_results.txt as run_classifier does."""
    if not model.compiled:
        training.compile_classifier(model, "adam")
    loss, accuracy = model.evaluate(_eval_dataset(features, FLAGS.eval_batch_size), verbose=0)
    best = training.read_best(FLAGS.output_dir)
    step = best["global_step"] if best else int(model.optimizer.iterations.numpy()) if model.optimizer.built else 0
    results = {"eval_accuracy": accuracy, "eval_loss": loss, "global_step": step}
    if not training.is_chief(model.distribute_strategy):
        return results
    with open(os.path.join(FLAGS.output_dir, "eval_results.txt"), "w", encoding="utf-8") as f:
        for key, value in results.items():
            logging.info("  %s = %s", key, value)
            f.write(f"{key} = {value}\n")
    return results


def predict(model, features) -> None:
    """Class probabilities per test example, one tab-separated line each, in input order."""
    logits = model.predict(_eval_dataset(features, FLAGS.predict_batch_size), verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    if not training.is_chief(model.distribute_strategy):
        return
    path = os.path.join(FLAGS.output_dir, "test_results.tsv")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in probabilities:
            f.write("\t".join(f"{p:.6f}" for p in row) + "\n")
    os.replace(path + ".tmp", path)


def export_model(model, tokenizer, labels, sample_features) -> None:
    """Writes <output_dir>/export: Hugging Face files, SavedModel, ONNX, INT8 ONNX, labels."""
    x, _ = next(iter(_eval_dataset(sample_features, 8)))
    sample = {k: v.numpy() for k, v in x.items()}

    def write_files(folder):
        checkpoints.save_hf_folder(model, folder, tokenizer.vocab_file, labels, FLAGS.do_lower_case)
        with open(os.path.join(folder, "labels.json"), "w", encoding="utf-8") as f:
            json.dump(labels, f)

    export.export_folder(model, os.path.join(FLAGS.output_dir, "export"), sample=sample, write_files=write_files,
                         info={"model": "bert_classifier", "task_name": FLAGS.task_name, "labels": labels,
                               "max_seq_length": FLAGS.max_seq_length, "do_lower_case": FLAGS.do_lower_case})


def main(argv):
    del argv
    if not (FLAGS.do_train or FLAGS.do_eval or FLAGS.do_predict):
        raise app.UsageError("At least one of --do_train, --do_eval or --do_predict must be set")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    pretrained = checkpoints.resolve_pretrained(FLAGS.init_checkpoint, FLAGS.bert_config_file, FLAGS.vocab_file)
    validate_flags(pretrained)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    training.set_precision_policy(FLAGS.mixed_precision)
    strategy = training.get_distribution_strategy(FLAGS.distribution_strategy, FLAGS.tpu)
    keras.utils.set_random_seed(FLAGS.seed)

    processor = data.get_processor(FLAGS.task_name, on_error="skip" if FLAGS.skip_bad_rows else "raise")
    labels = processor.get_labels()
    tokenizer = Tokenizer(pretrained.vocab_file, FLAGS.do_lower_case)
    with strategy.scope():
        pooling = FLAGS.classifier_pooling
        if pretrained.classifier_pooling and not FLAGS["classifier_pooling"].present:
            pooling = pretrained.classifier_pooling
        model = BertClassifier(BertEncoder(pretrained.config), num_labels=len(labels), pooling=pooling)
        checkpoints.restore_weights(model, pretrained)
    eval_features = (_features(processor.get_dev_examples(FLAGS.data_dir), tokenizer, labels)
                     if FLAGS.do_eval or FLAGS.do_train else None)
    if FLAGS.do_train:
        train(model, strategy, processor, tokenizer, labels, eval_features if FLAGS.do_eval else None)
    if FLAGS.do_eval:
        evaluate(model, eval_features)
    if FLAGS.do_predict:
        predict(model, _features(processor.get_test_examples(FLAGS.data_dir), tokenizer, labels))
    if FLAGS.do_train and FLAGS.do_export and training.is_chief(strategy):
        export_model(model, tokenizer, labels, eval_features)


if __name__ == "__main__":
    app.run(main)
