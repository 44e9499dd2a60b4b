"""Training: the Trainer, schedules, callbacks, metrics."""

from labkit.train.callbacks import Callback, History, ProgressBar
from labkit.train.trainer import TrainConfig, Trainer, TrainingStopped

__all__ = ["Callback", "History", "ProgressBar", "TrainConfig", "Trainer", "TrainingStopped"]
