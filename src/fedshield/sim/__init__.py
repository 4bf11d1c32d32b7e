"""The in-process simulator: local training, the round loop, evaluation, checkpoints."""

from .evaluate import Evaluator, accuracy
from .loop import run_experiment, run_round, select_clients, summarize, train_clients
from .plot import plot_run
from .setup import Setup, build_setup, with_start
from .state import RoundState, load_checkpoint, save_checkpoint
from .train import LocalTrainer, TrainSettings, local_train_function

__all__ = [
    "Evaluator",
    "LocalTrainer",
    "RoundState",
    "Setup",
    "TrainSettings",
    "accuracy",
    "build_setup",
    "load_checkpoint",
    "local_train_function",
    "plot_run",
    "run_experiment",
    "run_round",
    "save_checkpoint",
    "select_clients",
    "summarize",
    "train_clients",
    "with_start",
]
