"""The in-process simulator: local training, the round loop, evaluation, checkpoints."""

from .evaluate import Evaluator, accuracy
from .loop import run_experiment, run_round, select_clients, summarize, train_clients
from .plot import plot_run
from .setup import Setup, build_setup, with_start
from .checkpoint import load_checkpoint, resume_state, save_checkpoint
from .state import RoundState
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
    "resume_state",
    "run_experiment",
    "run_round",
    "save_checkpoint",
    "select_clients",
    "summarize",
    "train_clients",
    "with_start",
]
