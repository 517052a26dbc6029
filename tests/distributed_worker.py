"""A worker process for the distribution tests: trains a tiny BERT classifier with the project's
trainer under the strategy named on the command line and saves its final weights.

    python tests/distributed_worker.py STRATEGY OUTPUT_DIR WEIGHTS.npz

`mirrored` splits the CPU into two logical devices; `multi_worker_mirrored` reads TF_CONFIG.
Dropout is off so that a run split over replicas and a single-process run see the same maths.
"""
import sys

import numpy as np
import tensorflow as tf

STEPS = 6
GLOBAL_BATCH = 8
MAX_GRAD_NORM = 0.05  # small enough that every step clips


def main(strategy_name: str, output_dir: str, weights_path: str) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if strategy_name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from bertdistill.data import pipeline

    from bertdistill.training import distribute, optimization, trainer
    from bertdistill.models.bert import BertClassifier, BertEncoder
    from tests.bert_fixtures import tiny_config

    strategy = distribute.get_distribution_strategy(strategy_name)
    rng = np.random.default_rng(0)
    rows = [[2, *rng.integers(5, 20, size=int(n)), 3] for n in rng.integers(1, 7, size=GLOBAL_BATCH * STEPS)]
    features = pipeline.Features(input_ids=pipeline.to_ragged(rows), token_type_ids=pipeline.to_ragged(
        [[0] * len(r) for r in rows]), label_ids=np.array([r[1] % 2 for r in rows], np.int32),
        guids=[str(i) for i in range(len(rows))], pad_id=0)
    steps = pipeline.num_batches(features, batch_size=GLOBAL_BATCH, is_training=True)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = BertClassifier(BertEncoder(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
                               num_labels=2)
        optimizer = optimization.create_optimizer(learning_rate=1e-2, num_train_steps=steps, num_warmup_steps=1)
    run = trainer.Trainer(trainer.ClassifierTask(model), optimizer, strategy=strategy, output_dir=output_dir,
                          max_grad_norm=MAX_GRAD_NORM, save_checkpoints_steps=2, log_every_steps=1)
    history = run.fit(lambda epoch: pipeline.make_dataset(features, batch_size=GLOBAL_BATCH, is_training=True,
                                                          seed=epoch), num_train_steps=steps, steps_per_epoch=steps)
    np.savez(weights_path, replicas=strategy.num_replicas_in_sync, steps=int(run.step.numpy()),
             loss=history[-1]["loss"], **{v.path: v.numpy() for v in model.trainable_variables})


if __name__ == "__main__":
    main(*sys.argv[1:4])
