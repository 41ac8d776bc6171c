"""Training: the paper's schedules, optimizer with EMA, L2 decay, strategies and the run skeleton.

`run(task)` (training/run.py) is the one skeleton of every task; `train(TrainConfig(...))`
runs classification, `keras_skipblock.detection.train_detector` detection.
"""

from keras_skipblock.training.callbacks import EMAModelCheckpoint, ema_weights, standard_callbacks
from keras_skipblock.training.driver import TrainConfig, build_model, build_schedule, load_matching_weights, train
from keras_skipblock.training.loss_factory import LOSSES, SparseCategoricalFocalCrossentropy, make_loss
from keras_skipblock.training.optimizers import (
    SGD,
    RMSprop,
    add_weight_decay,
    build_optimizer,
    set_bn_momentum,
)
from keras_skipblock.training.schedules import (
    WarmupExponentialDecay,
    multistep_schedule,
    paper_schedule,
    scaled_learning_rate,
)
from keras_skipblock.training.run import Task, run
from keras_skipblock.training.strategy import STRATEGIES, get_strategy

__all__ = [
    "TrainConfig", "train", "build_model", "build_schedule", "load_matching_weights",
    "Task", "run", "EMAModelCheckpoint", "ema_weights", "standard_callbacks", "LOSSES", "make_loss",
    "SparseCategoricalFocalCrossentropy", "RMSprop", "SGD", "build_optimizer",
    "add_weight_decay", "set_bn_momentum", "WarmupExponentialDecay", "paper_schedule",
    "multistep_schedule", "scaled_learning_rate", "STRATEGIES", "get_strategy",
]
