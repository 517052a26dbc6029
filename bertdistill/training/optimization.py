"""BERT's optimizer: AdamW with warm-up then linear decay, no weight decay on LayerNorm weights
and biases, optional layer-wise learning rates.

Gradient clipping is not the optimizer's job here: Keras' `clipnorm`/`global_clipnorm` clip each
replica's gradients before they are summed, which changes the maths under a distribution
strategy. The trainer (`bertdistill/training/trainer.py`) all-reduces the gradients, clips them by global
norm, and then applies them with an optimizer made by `create_optimizer`, which does not reduce
them a second time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import keras

from bertdistill import PACKAGE
# Matched against variable paths, e.g. `layer_0/attention_LayerNorm/gamma`, `classifier/bias`.
NO_WEIGHT_DECAY = re.compile(r"LayerNorm|layer_norm|(?:^|/)bias$")
_LAYER = re.compile(r"(?:^|/)layer_(\d+)/")
_EMBEDDINGS = re.compile(r"(?:^|/)embeddings/")


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need total_steps > 0 and 0 <= warmup_steps <= total_steps; "
                             f"got total_steps={total_steps}, warmup_steps={warmup_steps}")
        self.peak, self.total_steps, self.warmup_steps = peak, total_steps, warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * keras.ops.clip(keras.ops.where(step < self.warmup_steps, warmup, decay), 0.0, 1.0)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def layerwise_lr_multipliers(variables: Iterable[keras.Variable | str], num_layers: int | None,
                             decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay factors by variable path, for BERT's naming.

    With `num_layers` L (None: one more than the largest layer index found), a variable under
    `layer_i/` (`layer_0` is the bottom) gets `decay ** (L - i)`, one under `embeddings/`
    `decay ** (L + 1)`; anything else (pooler, classifier) keeps 1.0 and is left out.
    """
    paths = [v if isinstance(v, str) else v.path for v in variables]
    layers = {path: int(m.group(1)) for path in paths if (m := _LAYER.search(path))}
    if not layers:
        raise ValueError("layer-wise learning-rate decay needs variables under `layer_<i>/`; none found")
    num_layers = max(layers.values()) + 1 if num_layers is None else num_layers
    if max(layers.values()) >= num_layers:
        raise ValueError(f"variable {max(layers, key=layers.get)} is beyond num_layers={num_layers}")
    multipliers = {path: decay ** (num_layers + 1) for path in paths if _EMBEDDINGS.search(path)}
    multipliers.update({path: decay ** (num_layers - i) for path, i in layers.items()})
    return multipliers


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdamWeightDecay(keras.optimizers.AdamW):
    """Keras AdamW with BERT's weight-decay exclusions and per-variable learning rates, both by path.

    Weight decay skips variables whose path matches `NO_WEIGHT_DECAY` (LayerNorm weights, biases),
    through Keras' `exclude_from_weight_decay`. The learning rate of a variable is multiplied by
    `lr_multipliers[path]` (default 1.0) or, when `layerwise_lr_decay != 1`, by
    `layerwise_lr_multipliers(variables, None, layerwise_lr_decay)`. Adam is invariant to the
    scale of the gradients, so the factor scales the Adam step itself; Keras applies the
    decoupled weight decay separately, at the schedule's rate.

    `gradients_all_reduced=True` (what the project's trainer uses): `apply` takes gradients that
    the caller has already summed over replicas (and clipped), and does not all-reduce them again
    as Keras' TensorFlow optimizer otherwise does in a replica context.
    """

    def __init__(self, *, layerwise_lr_decay: float = 1.0, lr_multipliers: Mapping[str, float] | None = None,
                 gradients_all_reduced: bool = False, **kwargs):
        if lr_multipliers is not None and layerwise_lr_decay != 1.0:
            raise ValueError("give lr_multipliers or layerwise_lr_decay, not both")
        super().__init__(**kwargs)
        self.layerwise_lr_decay = layerwise_lr_decay
        self.lr_multipliers = None if lr_multipliers is None else dict(lr_multipliers)
        self.gradients_all_reduced = gradients_all_reduced

    def build(self, variables):
        self.exclude_from_weight_decay(var_list=[v for v in variables if NO_WEIGHT_DECAY.search(v.path)])
        multipliers = self.lr_multipliers or {}
        if self.layerwise_lr_decay != 1.0:
            multipliers = layerwise_lr_multipliers(variables, None, self.layerwise_lr_decay)
        self._lr_scales = [multipliers.get(v.path, 1.0) for v in variables]
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate if scale == 1.0 else learning_rate * scale)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if self.gradients_all_reduced:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def get_config(self) -> dict:
        return {**super().get_config(), "layerwise_lr_decay": self.layerwise_lr_decay,
                "lr_multipliers": self.lr_multipliers, "gradients_all_reduced": self.gradients_all_reduced}


def create_optimizer(*, learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                     weight_decay: float = 0.01, layerwise_lr_decay: float = 1.0,
                     lr_multipliers: Mapping[str, float] | None = None, constant_learning_rate: bool = False,
                     loss_scaling: bool | None = None) -> keras.optimizers.Optimizer:
    """BERT's optimizer for the project's trainer: AdamW (epsilon 1e-6), linear warm-up then linear
    decay to 0 (or a constant rate, TinyBERT's stage 1), no weight decay on LayerNorm weights and
    biases, optional layer-wise or per-variable learning rates (see `AdamWeightDecay`).

    Wrapped in Keras' `LossScaleOptimizer` when `loss_scaling` (default: when the global policy is
    `mixed_float16`). Create it inside `strategy.scope()`.
    """
    schedule = (learning_rate if constant_learning_rate
                else WarmupLinearDecay(learning_rate, num_train_steps, num_warmup_steps))
    optimizer = AdamWeightDecay(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
                                layerwise_lr_decay=layerwise_lr_decay, lr_multipliers=lr_multipliers,
                                gradients_all_reduced=True)
    if loss_scaling is None:
        loss_scaling = keras.mixed_precision.global_policy().name == "mixed_float16"
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer
