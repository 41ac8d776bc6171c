"""Learning-rate schedules of the paper's set-ups (SPEC §4), as Keras schedules.

ImageNet (after EfficientNet): linear warm-up from 1e-6 to the peak over 3
epochs, then x0.97 every 2.4 epochs (staircase), evaluated per step. The
peak is 0.032 at a global batch of 512 and scales linearly with the global
batch: peak = 0.032 * batch / 512 (e.g. 0.008 at 128, 0.128 at 2048).

The decay counts from the end of the warm-up, so the peak is reached and the
curve has no jump. (EfficientNet's reference code counts the decay from step
0, so the rate drops from the peak to 0.97 * peak right after its warm-up;
set `decay_from_warmup_end=False` for that.)

CIFAR-100: multi-step decay, x0.2 at epochs 60, 120, 160 (Keras'
`PiecewiseConstantDecay`, see `multistep_schedule`).
"""

import keras
from keras import ops

PAPER_PEAK_LR = 0.032
PAPER_BATCH = 512
WARMUP_EPOCHS = 3.0
DECAY_EPOCHS = 2.4
DECAY_RATE = 0.97
INITIAL_LR = 1e-6


def scaled_learning_rate(global_batch_size, base_learning_rate=PAPER_PEAK_LR, base_batch_size=PAPER_BATCH):
    """Linear scaling rule: base_learning_rate * global_batch_size / base_batch_size."""
    return base_learning_rate * global_batch_size / base_batch_size


@keras.saving.register_keras_serializable(package="keras_skipblock")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `initial_learning_rate` to `peak_learning_rate` over
    `warmup_steps`, then `peak * decay_rate ** (k / decay_steps)` (k = steps since
    the warm-up ended, or since step 0 when `decay_from_warmup_end=False`),
    with `floor` on the exponent when `staircase`."""

    def __init__(self, peak_learning_rate, warmup_steps, decay_steps, decay_rate=DECAY_RATE,
                 initial_learning_rate=INITIAL_LR, staircase=True, decay_from_warmup_end=True,
                 name="warmup_exponential_decay"):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0; got {decay_steps}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = float(warmup_steps)
        self.decay_steps = float(decay_steps)
        self.decay_rate = float(decay_rate)
        self.initial_learning_rate = float(initial_learning_rate)
        self.staircase = bool(staircase)
        self.decay_from_warmup_end = bool(decay_from_warmup_end)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decay_start = self.warmup_steps if self.decay_from_warmup_end else 0.0
        exponent = ops.maximum(step - decay_start, 0.0) / self.decay_steps
        if self.staircase:
            exponent = ops.floor(exponent)
        decayed = self.peak_learning_rate * ops.power(self.decay_rate, exponent)
        if self.warmup_steps == 0:
            return decayed
        fraction = ops.minimum(step / self.warmup_steps, 1.0)
        warm = self.initial_learning_rate + (self.peak_learning_rate - self.initial_learning_rate) * fraction
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "initial_learning_rate": self.initial_learning_rate,
            "staircase": self.staircase,
            "decay_from_warmup_end": self.decay_from_warmup_end,
            "name": self.name,
        }


def paper_schedule(global_batch_size, steps_per_epoch, peak_learning_rate=None,
                   warmup_epochs=WARMUP_EPOCHS, decay_epochs=DECAY_EPOCHS, decay_rate=DECAY_RATE,
                   initial_learning_rate=INITIAL_LR):
    """The ImageNet schedule for a run with `steps_per_epoch` steps of `global_batch_size`.

    peak_learning_rate: None for the linearly scaled paper value
    (0.032 * global_batch_size / 512).
    """
    peak = scaled_learning_rate(global_batch_size) if peak_learning_rate is None else peak_learning_rate
    return WarmupExponentialDecay(
        peak_learning_rate=peak,
        warmup_steps=round(warmup_epochs * steps_per_epoch),
        decay_steps=max(decay_epochs * steps_per_epoch, 1.0),
        decay_rate=decay_rate,
        initial_learning_rate=min(initial_learning_rate, peak),
    )


def multistep_schedule(learning_rate, milestones, steps_per_epoch, factor=0.2):
    """learning_rate * factor ** (number of milestone epochs passed), per step."""
    boundaries = [int(m * steps_per_epoch) for m in milestones]
    values = [learning_rate * factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
