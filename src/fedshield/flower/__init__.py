"""Flower integration: the same fedshield defenses and client training across processes and machines.

Needs the optional extra (``pip install 'fedshield[flower]'``); the in-process simulator never imports this
package. Contents:

* :class:`FedShieldStrategy` (``strategy``): a message-API ``FedAvg`` whose aggregation is any registered defense;
* ``client_app.app`` / :func:`make_client_app`: a ClientApp that trains its node's clients with
  ``fedshield.sim.loop.train_clients``;
* ``server_app.app`` / :func:`make_server_app`: a ServerApp that builds the experiment from the run config;
* ``runconfig``: run/node config → fedshield experiment, which clients a node hosts (Flower-free);
* ``placement``: which node hosts which client; ``polling``: a Grid that collects replies every 0.1 s;
* ``federate`` (``fedshield federate``): an experiment as a real deployment, written to the simulator's run
  folder; ``federation``: the SuperLink/SuperNode processes; ``processes``: binaries, environment, PIDs.

See docs/flower.md.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fedshield.flower needs Flower: pip install 'fedshield[flower]' (torch==2.13.0 'flwr[simulation]>=1.41,<1.43')"
    ) from exc

from .client_app import make_client_app
from .records import MalformedReply, arrayrecord_to_flat, flat_to_arrayrecord
from .server_app import make_server_app, run_server
from .strategy import FedShieldStrategy

__all__ = [
    "FedShieldStrategy",
    "MalformedReply",
    "arrayrecord_to_flat",
    "flat_to_arrayrecord",
    "make_client_app",
    "make_server_app",
    "run_server",
]
