"""Flower integration: the same fedshield defenses and client training across processes and machines.

Needs the optional extra (``pip install 'fedshield[flower]'``); the in-process simulator never imports this
package. Contents:

* :class:`FedShieldStrategy` (``strategy``): a message-API ``FedAvg`` whose aggregation is any registered defense;
* ``client_app.app`` / :func:`make_client_app`: a ClientApp that trains with ``fedshield.sim.loop.train_clients``;
* ``server_app.app`` / :func:`make_server_app`: a ServerApp that builds the experiment from the run config;
* ``runconfig``: run/node config → fedshield experiment (Flower-free).

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
