"""The Flower ServerApp: builds the experiment from the run config, runs :class:`FedShieldStrategy`.

Run-config keys besides those of :mod:`fedshield.flower.runconfig`:

``num-server-rounds`` rounds (``0``: the config's ``rounds``)
``fraction-train``    share of connected nodes trained per round (default 1.0)
``fraction-evaluate`` share asked for federated evaluation on their own data (default 0.0: off)
``min-nodes``         wait for this many connected nodes before a round (``0``: the config's ``num_clients``)
``server-eval``       evaluate MA/BA of the global model on the server each round (default true)
``log-file``          JSON-lines log of every round (``""``: none); relative paths are relative to the
                      ServerApp's working directory, so prefer absolute ones
``save-model``        ``torch.save`` the final flat model and layout names here (``""``: don't)
``round-timeout``     seconds to wait for replies in a round (default 3600)
``reply-poll``        seconds between the ServerApp's pulls for replies (default 0.1; Flower's own grid: 3)
``client-selection``  ``flower`` (default): FedAvg samples ``fraction-train`` of the nodes, each node is one
                      client; ``fedshield``: the simulator's seeded selection of ``clients_per_round`` clients
                      each round, sent to the nodes hosting them (nodes may host several)
``batch-clients``     with ``fedshield`` selection: one message per node naming all its selected clients (default
                      true: one ClientApp process per node and round), else one message per client
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..sim import select_clients
from .common import setup_for_run_config
from .placement import discover_client_nodes
from .polling import PollingGrid
from .records import arrayrecord_to_flat, flat_to_arrayrecord
from .strategy import FedShieldStrategy

__all__ = ["make_server_app", "app", "run_server"]


def _get(rc: Any, key: str, default: Any) -> Any:
    v = rc.get(key, default)
    return default if v in ("", None) else v


def run_server(grid: Grid, context: Context, base_dir: str | Path | None = None) -> FedShieldStrategy:
    rc = context.run_config
    cfg, setup = setup_for_run_config(rc, base_dir)
    defense = setup.new_defense()
    polling = PollingGrid(grid, float(_get(rc, "reply-poll", 0.1)))
    rounds = int(_get(rc, "num-server-rounds", 0)) or cfg.rounds
    min_nodes = int(_get(rc, "min-nodes", 0)) or cfg.num_clients
    fraction_train = float(_get(rc, "fraction-train", 1.0))
    fraction_evaluate = float(_get(rc, "fraction-evaluate", 0.0))
    log_file = str(_get(rc, "log-file", "")) or None
    strategy = FedShieldStrategy(
        defense=defense,
        layout=setup.layout,
        seed=cfg.seed,
        malicious_ids=setup.attackers,
        attack_start_round=cfg.attack.start_round,
        num_clients=cfg.num_clients,
        log_path=log_file,
        fraction_train=fraction_train,
        fraction_evaluate=fraction_evaluate,
        min_available_nodes=min_nodes,
        min_train_nodes=max(1, int(fraction_train * min_nodes)) if fraction_train > 0 else 0,
        min_evaluate_nodes=max(1, int(fraction_evaluate * min_nodes)) if fraction_evaluate > 0 else 0,
    )
    strategy.log_event(
        "start",
        experiment=cfg.name,
        defense=cfg.defense.name,
        defense_params=cfg.defense.params,
        attack=cfg.attack.name,
        attackers=setup.attackers,
        rounds=rounds,
        num_clients=cfg.num_clients,
        dim=setup.layout.dim,
    )
    if str(_get(rc, "client-selection", "flower")) == "fedshield":
        strategy.select_clients = partial(select_clients, cfg, setup.attackers)
        strategy.batch_per_node = bool(_get(rc, "batch-clients", True))
        strategy.client_nodes = discover_client_nodes(
            polling, cfg.num_clients, min_nodes, float(_get(rc, "round-timeout", 3600.0))
        )
        strategy.log_event("placement", client_nodes=strategy.client_nodes)
    evaluate_fn = None
    if bool(_get(rc, "server-eval", True)):
        evaluate_fn = strategy.server_evaluate_fn(setup.evaluator.evaluate, cfg.eval.every, rounds)
    t0 = time.time()
    result = strategy.start(
        grid=polling,
        initial_arrays=flat_to_arrayrecord(setup.start, setup.layout),
        num_rounds=rounds,
        timeout=float(_get(rc, "round-timeout", 3600.0)),
        evaluate_fn=evaluate_fn,
    )
    final = arrayrecord_to_flat(result.arrays, setup.layout) if result.arrays is not None else setup.start
    save = str(_get(rc, "save-model", ""))
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"global_params": final, "initial_params": setup.initial_params, "layout": setup.layout.names}, save
        )
    strategy.log_event("finish", rounds=rounds, seconds=round(time.time() - t0, 3))
    return strategy


def make_server_app(base_dir: str | Path | None = None) -> ServerApp:
    """A ServerApp; relative ``fedshield-config`` paths are resolved against ``base_dir`` (the app folder)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, base_dir)

    return server


app: Optional[ServerApp] = make_server_app()
