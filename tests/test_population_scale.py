"""A large population: clients are index tensors into the one training tensor, and a round trains only the
selected ones (no per-client copies of the data are made at set-up)."""

import torch

from fedshield.config import config_from_dict
from fedshield.sim import build_setup
from fedshield.sim.loop import run_round
from fedshield.sim.state import RoundState


def test_two_thousand_clients_hold_only_indices_and_a_round_runs():
    cfg = config_from_dict({
        "model": "small_cnn", "num_clients": 2000, "clients_per_round": 100, "rounds": 1, "workers": 1,
        "data": {"dataset": "synthetic"}, "train": {"lr": 0.05, "epochs": 1, "batch_size": 64},
        "eval": {"every": 1},
    })
    setup = build_setup(cfg)
    parts = setup.client_indices
    assert len(parts) == 2000
    assert all(p.dtype == torch.int64 and p.dim() == 1 for p in parts)
    flat = torch.cat(parts)
    n_train = len(setup.dataset.train_y)
    assert len(flat) == n_train and len(torch.unique(flat)) == n_train  # every sample once: 1 per client
    # a client's data is gathered from the shared tensor when asked for, and equals those rows
    x, y = setup.client_data(1234)
    assert torch.equal(x, setup.dataset.train_x[parts[1234]]) and torch.equal(y, setup.dataset.train_y[parts[1234]])
    params, row = run_round(setup, RoundState(0, setup.start, setup.new_defense()))
    assert row["selected"] == 100 and row["accepted"] == 100
    assert not torch.equal(params, setup.initial_params) and torch.isfinite(params).all()
