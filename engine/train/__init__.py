"""Training one candidate: sampling, augmentation, losses, the trainer with hooks, objectives, logging sinks.

The search's workers call ``train_candidate(genome, data, config)``; see docs/ARCHITECTURE.md.
"""

from engine.train.config import TrainerConfig
from engine.train.data import TrainingData, prepare_training_data
from engine.train.objectives import objective_f1
from engine.train.sinks import CallbackSink, CsvSink, MetricsLogger
from engine.train.trainer import Trainer, TrainingFailed, TrainResult, train_candidate

__all__ = [
    "CallbackSink",
    "CsvSink",
    "MetricsLogger",
    "TrainerConfig",
    "TrainResult",
    "Trainer",
    "TrainingData",
    "TrainingFailed",
    "objective_f1",
    "prepare_training_data",
    "train_candidate",
]
