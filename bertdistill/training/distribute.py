"""`tf.distribute` strategy and Keras precision policy from the strings of the flags.

Call `get_distribution_strategy` before any other TensorFlow op and `set_precision_policy`
before any model is built; build models and optimizers inside `strategy.scope()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from bertdistill.configs import PRECISIONS
from bertdistill.errors import UserError, field

STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def get_distribution_strategy(name: str, tpu_address: str | None = None) -> tf.distribute.Strategy:
    """The strategy named by `--distribution_strategy`.

    `mirrored` uses every GPU, or every logical CPU when there is none; `multi_worker_mirrored`
    reads the cluster from `TF_CONFIG` (see the README: scaling out); `tpu` connects to `--tpu`.
    """
    if name == "off":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except Exception as e:  # noqa: BLE001 - any failure to reach the TPU is the user's to fix
            raise UserError(f"{field('tpu')}={tpu_address!r}: no TPU reachable ({str(e).splitlines()[0][:200]}); "
                            f"check the TPU name/address or use another {field('distribution_strategy')}") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"unknown distribution strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker writes the run's outputs (always true outside multi-worker training)."""
    return strategy.extended.should_checkpoint


def set_precision_policy(name: str) -> None:
    """Sets Keras' global dtype policy (`--mixed_precision`); call before any model is built."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision policy {name!r}; expected one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(name)


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """`set_precision_policy(name)` for a `with` block, then back to the previous policy."""
    previous = keras.mixed_precision.global_policy().name
    set_precision_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
