"""Training throughput of the teacher (all-MiniLM-L6-v2, SST-2 batches of 32) with one worker and
with several `multi_worker_mirrored` workers on localhost, through the project's trainer.

    python benchmarks/multi_worker_speed.py --workers=1,2 --steps=30

Each worker is a process of this script with its own `TF_CONFIG` and `--threads` intra-op
threads; the global batch is split across workers. On one small machine the workers share the
cores (and talk over loopback), so this measures the overhead of the distributed path, not a
speed-up.
"""

import json
import os
import socket
import subprocess
import sys
import time

from absl import app, flags

from bertdistill.cli.shared_flags import define_flag

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
define_flag("data_dir", default=os.path.join(SHARED, "data", "sst2"), help="GLUE SST-2 folder.")
flags.DEFINE_list("workers", ["1", "2"], "Worker counts to time.")
flags.DEFINE_integer("steps", 30, "Timed steps (after 5 warm-up steps).")
define_flag("threads", help="Intra-op threads per worker (0: cores / workers).")
flags.DEFINE_integer("worker_count", 0, "Internal: run as one of this many workers.")
FLAGS = flags.FLAGS


def worker() -> None:
    """One worker: trains the teacher for 5 + `--steps` steps and prints examples/s (chief only)."""
    import tensorflow as tf

    threads = FLAGS.threads or max(1, (os.cpu_count() or 2) // FLAGS.worker_count)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import tempfile

    from bertdistill.data import data, pipeline

    from bertdistill.models import checkpoints

    from bertdistill.training import distribute, optimization, trainer
    from bertdistill.models.bert import BertClassifier, BertEncoder
    from bertdistill.data.tokenization import Tokenizer

    strategy = distribute.get_distribution_strategy("multi_worker_mirrored" if FLAGS.worker_count > 1 else "off")
    pretrained = checkpoints.resolve_pretrained()
    examples = data.Sst2Processor().get_train_examples(FLAGS.data_dir)[:8000]
    features = pipeline.convert_examples_to_features(examples, Tokenizer(pretrained.vocab_file), ["0", "1"], 128)
    with strategy.scope():
        model = BertClassifier(BertEncoder(pretrained.config), 2, pooling="mean")
        checkpoints.restore_weights(model, pretrained)
        optimizer = optimization.create_optimizer(learning_rate=2e-5, num_train_steps=1000, num_warmup_steps=10)
    run = trainer.Trainer(trainer.ClassifierTask(model), optimizer, strategy=strategy,
                          output_dir=tempfile.mkdtemp())
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = pipeline.make_dataset(features, batch_size=32, is_training=True, seed=0).repeat().with_options(options)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    for _ in range(5):
        run.train_step(iterator)
    start = time.perf_counter()
    total = sum(float(run.train_step(iterator)[2]) for _ in range(FLAGS.steps))
    if distribute.is_chief(strategy):
        print(json.dumps({"workers": FLAGS.worker_count, "threads_per_worker": threads,
                          "examples_per_s": total / (time.perf_counter() - start)}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def main(argv):
    del argv
    if FLAGS.worker_count:
        worker()
        return
    results = []
    for count in map(int, FLAGS.workers):
        cluster = {"worker": [f"localhost:{free_port()}" for _ in range(count)]}
        processes = []
        for index in range(count):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            if count > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen(
                [sys.executable, __file__, f"--worker_count={count}", f"--steps={FLAGS.steps}",
                 f"--threads={FLAGS.threads}", f"--data_dir={FLAGS.data_dir}"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        outputs = [p.communicate()[0] for p in processes]
        lines = [line for out in outputs for line in out.splitlines() if line.startswith("{")]
        results.append(json.loads(lines[0]))
        print(lines[0], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
