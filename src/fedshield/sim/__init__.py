"""The in-process simulator: local training, the round loop, evaluation, checkpoints."""

from .evaluate import Evaluator, accuracy
from .loop import run_experiment, run_round, select_clients, summarize, train_clients
from .setup import Setup, build_setup
from .train import LocalTrainer, TrainSettings

__all__ = [
    "Evaluator",
    "LocalTrainer",
    "Setup",
    "TrainSettings",
    "accuracy",
    "build_setup",
    "run_experiment",
    "run_round",
    "select_clients",
    "summarize",
    "train_clients",
]
