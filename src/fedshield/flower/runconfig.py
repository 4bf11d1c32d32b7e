"""Flower run config / node config → fedshield experiment (no Flower import here).

The ServerApp and every ClientApp turn the same run config into the same :class:`ExperimentConfig`, so that
``build_setup`` gives them the same dataset, partition, initial model and attackers as the in-process
simulator.

Run-config keys (``[tool.flwr.app.config]`` of the app, overridable with ``flwr run -c``):

``fedshield-config``  a fedshield YAML path (absolute, relative to the app folder, or to the working directory),
                      or a built-in name (``demo``, ``synthetic3``)
``fedshield-yaml``    a whole fedshield config as YAML text (wins over ``fedshield-config``; ``fedshield federate``
                      puts the resolved config here so that remote SuperNodes need no file)
``fedshield-set``     ``;``-separated ``key=value`` overrides, as ``fedshield run --set`` (values are YAML)
``defense``           defense name overriding ``defense.name`` (``""``: keep the config's)
``defense-params``    JSON object overriding ``defense.params`` (``""``: keep; a new ``defense`` resets them)
``dataset``           overrides ``data.dataset`` (``""``: keep); ``data-root`` overrides ``data.root``
``seed``              overrides ``seed`` (``-1``: keep)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import ConfigError, ExperimentConfig, apply_overrides, config_from_dict, load_yaml_text, read_yaml_mapping

__all__ = [
    "PRESETS",
    "experiment_from_run_config",
    "client_id_from_node_config",
    "client_id_for_message",
    "hosted_clients",
    "config_path_candidates",
]

# Built-in configs addressable by name (``fedshield-config = "synthetic3"``): no file to ship.
PRESETS: dict[str, dict[str, Any]] = {
    # 3 clients on the synthetic dataset, small_cnn, client 2 runs a pixel backdoor; FLAME. Seconds per round.
    "synthetic3": {
        "name": "flower_synthetic3",
        "seed": 0,
        "model": "small_cnn",
        "num_clients": 3,
        "clients_per_round": 3,
        "rounds": 3,
        "workers": 1,
        "threads": 1,
        "data": {"dataset": "synthetic", "partition": "iid"},
        "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
        "attack": {
            "name": "pixel",
            "num_attackers": 1,
            "attacker_ids": [2],
            "poison_per_batch": 10,
            "trigger": {"pattern": "square"},
        },
        "defense": {"name": "flame"},
        "eval": {"every": 1},
    },
}


def config_path_candidates(name: str, base_dir: str | Path | None) -> list[Path]:
    """Where ``fedshield-config = name`` is looked for, in order."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return [p]
    out = []
    if base_dir is not None:
        out.append(Path(base_dir) / p)
    out.append(Path.cwd() / p)
    return out


def _base_dict(name: str, base_dir: str | Path | None) -> dict[str, Any]:
    if not name:
        raise ConfigError("run config 'fedshield-config' is empty; give a YAML path or one of " + str(_names()))
    key = name.removeprefix("preset:")
    if key in PRESETS:
        return json.loads(json.dumps(PRESETS[key]))  # deep copy
    if key == "demo":
        from importlib.resources import files

        return load_yaml_text(files("fedshield").joinpath("demo.yaml").read_text()) or {}
    tried = config_path_candidates(name, base_dir)
    for path in tried:
        if path.is_file():
            return read_yaml_mapping(path, "config")  # ConfigError naming the file (and line) when unusable
    raise ConfigError(
        f"fedshield-config {name!r}: no such file (tried {[str(p) for p in tried]}) and not a built-in name {_names()}"
    )


def _inline_dict(text: str) -> dict[str, Any]:
    try:
        data = load_yaml_text(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"run config fedshield-yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("run config fedshield-yaml: the top level of a config must be a mapping")
    return data


def _names() -> list[str]:
    return sorted([*PRESETS, "demo"])


def _str(rc: Mapping[str, Any], key: str) -> str:
    v = rc.get(key, "")
    return "" if v is None else str(v).strip()


def experiment_from_run_config(run_config: Mapping[str, Any], base_dir: str | Path | None = None) -> ExperimentConfig:
    """The fedshield experiment a Flower run config describes (same result on the server and every client)."""
    inline = _str(run_config, "fedshield-yaml")
    if inline:
        data = _inline_dict(inline)
    else:
        data = _base_dict(_str(run_config, "fedshield-config") or "synthetic3", base_dir)
    sets = [s.strip() for s in _str(run_config, "fedshield-set").split(";") if s.strip()]
    data = apply_overrides(data, sets)
    defense = _str(run_config, "defense")
    if defense:
        section = data.setdefault("defense", {})
        if section.get("name") != defense:
            section["params"] = {}
        section["name"] = defense
    params = _str(run_config, "defense-params")
    if params:
        try:
            parsed = json.loads(params)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"run config defense-params is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ConfigError("run config defense-params must be a JSON object")
        data.setdefault("defense", {})["params"] = parsed
    dataset = _str(run_config, "dataset")
    if dataset:
        data.setdefault("data", {})["dataset"] = dataset
    root = _str(run_config, "data-root")
    if root:
        data.setdefault("data", {})["root"] = root
    seed = run_config.get("seed", -1)
    if seed not in ("", None) and int(seed) >= 0:
        data["seed"] = int(seed)
    return config_from_dict(data)


def hosted_clients(node_config: Mapping[str, Any], cfg: ExperimentConfig) -> list[int]:
    """The fedshield clients a SuperNode hosts: node ``partition-id`` p of ``num-partitions`` P (1 ≤ P ≤
    ``num_clients``, default ``num_clients``) hosts the clients c with c mod P = p, each on the simulator's
    partition of client c. P = ``num_clients`` is one client per node (client p)."""
    if "partition-id" not in node_config:
        raise ConfigError("node config has no 'partition-id'; start the SuperNode with --node-config 'partition-id=…'")
    pid = int(node_config["partition-id"])
    nparts = int(node_config.get("num-partitions", cfg.num_clients))
    if not 1 <= nparts <= cfg.num_clients:
        raise ConfigError(
            f"node config num-partitions={nparts} must be between 1 and the config's num_clients={cfg.num_clients}"
        )
    if not 0 <= pid < nparts:
        raise ConfigError(f"node config partition-id={pid} outside 0..{nparts - 1}")
    return list(range(pid, cfg.num_clients, nparts))


def client_id_for_message(node_config: Mapping[str, Any], cfg: ExperimentConfig, requested: Any = None) -> int:
    """The client a train/evaluate message is for: the server's ``client-id`` (which this node must host), or,
    when the server names none, the node's only client."""
    hosted = hosted_clients(node_config, cfg)
    if requested is None:
        if len(hosted) != 1:
            raise ConfigError(
                f"this node hosts {len(hosted)} clients ({hosted[:5]}…); the server must name one ('client-id')"
            )
        return hosted[0]
    if isinstance(requested, bool) or not isinstance(requested, int) or requested not in hosted:
        raise ConfigError(f"client-id={requested!r} is not hosted by this node (it hosts {hosted[:5]}…)")
    return int(requested)


def client_id_from_node_config(node_config: Mapping[str, Any], cfg: ExperimentConfig) -> int:
    """fedshield client id of a one-client SuperNode: its ``partition-id`` (see :func:`hosted_clients`)."""
    return client_id_for_message(node_config, cfg, None)

