"""The experiment schema: YAML in and out, validation with errors that name the key.

Every key has a default, so a config file only states what differs. Unknown keys and bad values are
rejected with the dotted key name and the allowed values. Names (dataset, partition, model, attack, defense,
post-training method) are checked against their registries, and the attack's, defense's and post-training
method's parameters against their specs, so a config that loads has no setting that fails later in a run.
:func:`set_key` is the one way an override reaches a config dict (``--set a.b=value``, a sweep's grid point, the
demo's runs).
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .attacks import available_attacks, check_attack_domain, get_attack_class, validate_attack_params
from .core.errors import ConfigError
from .core.numeric import is_int
from .core.registry import Registry
from .data import DATASETS, PARTITIONS, TRAFFIC_DATASETS
from .defenses import defense_min_clients, get_defense_class, validate_defense, validate_post_training
from .models import MODELS, TRAFFIC_MODELS

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "load_config",
    "apply_overrides",
    "set_key",
    "config_from_dict",
    "dump_config",
    "read_yaml",
    "load_yaml_text",
    "read_yaml_mapping",
    "non_finite_keys",
    "quick_limits",
]


def Registered(registry: Registry) -> Any:  # noqa: N802 - used as a type
    """A ``str`` field whose value must be a name in ``registry`` (the error lists the available names)."""

    def check(v: str) -> str:
        registry.get(v)
        return v

    return Annotated[str, AfterValidator(check)]


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or any(_takes_bool(a) for a in get_args(annotation))


def _takes_number(annotation: Any) -> bool:
    return annotation in (int, float) or any(_takes_number(a) for a in get_args(annotation))


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(_has_bool(v) for v in value))


_KEY_MARK = "[key "  # a section validator's message naming one of the section's keys: "[key NAME] message"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """A number key given ``true``/``false`` (YAML 1.1 also reads ``yes``, ``no``, ``on``, ``off`` so) is
        refused; pydantic would silently read it as 1 or 0 (``rounds: on`` ran one round)."""
        if isinstance(data, dict):
            for key, field in cls.model_fields.items():
                if key in data and _has_bool(data[key]) and _takes_number(field.annotation) \
                        and not _takes_bool(field.annotation):
                    raise ValueError(f"{_KEY_MARK}{key}] {data[key]!r} is a boolean (YAML reads true/false/yes/no/on/off "
                                     "so); give a number")
        return data


class SyntheticTrafficConfig(_Strict):
    """The synthetic traffic generator (``data.dataset: synthetic_traffic``; docs/nids.md)."""

    num_devices: int = Field(10, ge=1)
    flows_per_device: int = Field(3000, ge=10)
    attack_share: float = Field(0.3, gt=0, lt=1)
    drift: float = Field(0.6, ge=0)


class TrafficConfig(_Strict):
    """Preprocessing of a network-traffic dataset (docs/nids.md, "Preprocessing")."""

    label: Literal["binary", "multiclass"] = "binary"
    scaling: Literal["standard", "minmax", "none"] = "standard"
    log1p: bool = True
    drop_ports: bool = True
    test_fraction: float = Field(0.2, gt=0, lt=1)  # datasets published as one set
    split_seed: int = 0
    max_rows: Optional[int] = Field(None, ge=2)  # seeded subsample of the rows (quick runs)
    max_categories: int = Field(32, ge=1)
    window: int = Field(0, ge=0)  # > 0: windows of this many consecutive flows per device (model: gru)
    synthetic: SyntheticTrafficConfig = Field(default_factory=SyntheticTrafficConfig)


class DataConfig(_Strict):
    dataset: Registered(DATASETS) = "fashion_mnist"  # fedshield list datasets
    root: Optional[str] = None  # folder with the dataset files; default lookup order otherwise
    partition: Registered(PARTITIONS) = "iid"  # fedshield list partitions
    alpha: Optional[float] = Field(None, gt=0)  # dirichlet
    fraction: Optional[float] = Field(None, ge=0, le=1)  # deg_niid
    q: Optional[float] = Field(None, ge=0, le=1)  # fang_q
    attack_free_share: Optional[float] = Field(None, ge=0, le=1)  # attack_free: share of benign-only clients
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)  # traffic datasets only
    # "standard": the model standardises its input with the training split's per-channel mean and std
    # (Fashion-MNIST 0.2860 / 0.3530); "none": raw [0, 1] pixels, as Fedward's code. Triggers are stamped in
    # pixel space either way.
    normalize: Literal["standard", "none"] = "standard"
    server_holdout: int = Field(0, ge=0)  # training samples held out for the server (never given to clients)
    train_subset: Optional[int] = Field(None, gt=0)  # use only the first N training samples (quick runs)

    @model_validator(mode="after")
    def _partition_params(self) -> "DataConfig":
        need = {"dirichlet": "alpha", "deg_niid": "fraction", "fang_q": "q", "attack_free": "attack_free_share"}.get(
            self.partition
        )
        if need and getattr(self, need) is None:
            raise ValueError(f"partition {self.partition!r} needs data.{need}")
        if self.partition in ("by_device", "attack_free") and not self.is_traffic:
            raise ValueError(f"partition {self.partition!r} is for network-traffic datasets {list(TRAFFIC_DATASETS)}")
        return self

    @property
    def is_traffic(self) -> bool:
        return self.dataset in TRAFFIC_DATASETS


class TrainConfig(_Strict):
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    milestones: list[float] = Field(default_factory=list)  # fractions of epochs where lr *= gamma
    gamma: float = Field(0.1, gt=0)


class TriggerConfig(_Strict):
    """The global pixel trigger: a named ``pattern`` (default ``dba``) or explicit ``pixels``; giving
    ``pixels`` replaces the default pattern."""

    pattern: Optional[Literal["dba", "dba_cifar", "square", "plus"]] = "dba"
    pixels: Optional[list[tuple[int, int]]] = None  # explicit (row, col) positions instead of a pattern
    value: float = 1.0

    @model_validator(mode="before")
    @classmethod
    def _pixels_replace_pattern(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pixels") is not None and "pattern" not in data:
            return {**data, "pattern": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> "TriggerConfig":
        if (self.pattern is None) == (self.pixels is None):
            raise ValueError("give exactly one of trigger.pattern and trigger.pixels")
        if self.pixels is not None:
            if not self.pixels:
                raise ValueError("trigger.pixels is empty; give at least one [row, column]")
            negative = [p for p in self.pixels if min(p) < 0]
            if negative:
                raise ValueError(f"trigger.pixels {negative[:5]} are negative; pixels are [row, column], 0-based")
        return self


class AttackConfig(_Strict):
    """The attack (``fedshield list attacks``): ``name`` from the attack registry, ``params`` validated by the
    attack's class (errors name the parameter); the other keys apply to every attack. dba: attacker i uses
    local part i of the trigger; pixel: the global trigger; see docs/attacks.md for the rest."""

    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)
    num_attackers: int = Field(4, ge=0)
    selection: Literal["fixed", "sampled"] = "fixed"  # fixed: attackers join every round from start_round
    attacker_ids: Optional[list[int]] = None  # default: 0 .. num_attackers-1
    start_round: int = Field(1, ge=1)
    target_label: int = Field(2, ge=0)
    poison_per_batch: int = Field(20, ge=0)
    # a batch shorter than the batch size (an epoch's last): "fixed" poisons min(poison_per_batch, its length)
    # (the DBA authors' code), "proportional" the same share, floor(poison_per_batch * length / batch size)
    # (the Fedward authors' int(poison_rate * len(batch)), zkya/FEDWARD trainer/client.py 42-50)
    poison_count: Literal["fixed", "proportional"] = "fixed"
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    train: Optional[TrainConfig] = None  # attackers' optimiser; default: the benign one

    @field_validator("name")
    @classmethod
    def _known_attack(cls, v: str) -> str:
        if v not in available_attacks():
            raise ValueError(f"unknown attack {v!r}; available: {sorted(available_attacks())}")
        return v

    @model_validator(mode="after")
    def _params(self) -> "AttackConfig":
        validate_attack_params(self.name, self.params)  # ParameterError (a ValueError) naming the parameter
        return self

    @model_validator(mode="after")
    def _ids(self) -> "AttackConfig":
        if self.attacker_ids is not None:
            if len(self.attacker_ids) != self.num_attackers:
                raise ValueError(
                    f"attack.attacker_ids has {len(self.attacker_ids)} ids, attack.num_attackers is {self.num_attackers}"
                )
            if len(set(self.attacker_ids)) != len(self.attacker_ids):
                raise ValueError("attack.attacker_ids contains duplicates")
        return self

    def ids(self) -> list[int]:
        return list(self.attacker_ids) if self.attacker_ids is not None else list(range(self.num_attackers))


class DefenseConfig(_Strict):
    """The defense (``fedshield list defenses``): ``params`` checked against its spec and its value checks."""

    name: str = "fedavg"
    params: dict[str, Any] = Field(default_factory=dict)
    # the defense runs from this round on; before it, plain unweighted FedAvg (the Fedward authors' schedule:
    # defenses only in attack rounds). "attack_start": attack.start_round. 1: every round.
    from_round: Union[int, Literal["attack_start"]] = 1

    @field_validator("from_round", mode="before")
    @classmethod
    def _round_or_attack_start(cls, v: Any) -> Any:
        if v == "attack_start" or (is_int(v) and v >= 1):
            return v
        raise ValueError(f"defense.from_round={v!r} is invalid; allowed: an integer >= 1 or 'attack_start'")

    @model_validator(mode="after")
    def _valid(self) -> "DefenseConfig":
        validate_defense(self.name, self.params)  # ConfigError / ParameterError naming the name or parameter
        return self


class EvalConfig(_Strict):
    every: int = Field(1, ge=1)  # evaluate every E rounds (and always after the last)
    batch_size: int = Field(256, ge=1)  # images per forward pass (speed; docs/performance.md, Evaluation)
    test_subset: Optional[int] = Field(None, gt=0)  # evaluate on a fixed random subset of the test set


class PretrainConfig(_Strict):
    """A clean warm start (:mod:`fedshield.sim.pretrain`): ``rounds`` rounds of plain FedAvg, no attack and no
    defense, before round 1; cached and shared by every run with the same seed, model, clients, data and
    benign training. 0: start from the random initial model."""

    rounds: int = Field(0, ge=0)


class PostTrainingConfig(_Strict):
    name: str = "flain"  # a registered post-training method (fedshield list post_training)
    params: dict[str, Any] = Field(default_factory=dict)
    aux_per_class: int = Field(80, ge=1)  # auxiliary samples per class, from the held-out training slice

    @model_validator(mode="after")
    def _valid(self) -> "PostTrainingConfig":
        validate_post_training(self.name, self.params)
        return self


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    # fedshield list models. Traffic datasets: "mlp" (the default there), "autoencoder", "gru" (needs
    # data.traffic.window); images: the others (default lenet)
    model: Registered(MODELS) = "lenet"
    num_clients: int = Field(100, ge=1)
    clients_per_round: int = Field(10, ge=1)
    rounds: int = Field(30, ge=1)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    post_training: Optional[PostTrainingConfig] = None
    device: str = "cpu"  # cpu, cuda, cuda:N or mps; whether it exists is checked when the run is set up
    threads: Optional[int] = Field(None, ge=1)  # torch intra-op threads; default: torch's choice
    workers: int = Field(2, ge=1)  # clients trained side by side, one thread each (1: sequential)

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"device {v!r} is not a device; allowed: 'cpu', 'cuda', 'cuda:N', 'mps'")
        return v

    @field_validator("post_training", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v  # `post_training: flain`

    def attack_batch_size(self) -> int:
        """The attackers' batch size (``attack.train``, or the benign ``train`` when it is not set)."""
        return (self.attack.train or self.train).batch_size

    def defense_from_round(self) -> int:
        """The first round the defense runs in (``defense.from_round`` with ``attack_start`` resolved)."""
        fr = self.defense.from_round
        return self.attack.start_round if fr == "attack_start" else int(fr)

    @model_validator(mode="after")
    def _traffic_defaults(self) -> "ExperimentConfig":
        """Traffic datasets default to the ``mlp`` model and the benign label (0) as the backdoor target."""
        traffic_model = self.model in TRAFFIC_MODELS
        if (self.model == "gru") != (self.data.traffic.window > 0):
            raise ValueError("model gru reads windows of flows: set data.traffic.window > 0 with it (and only with it)")
        if self.data.is_traffic:
            if "model" not in self.model_fields_set:
                object.__setattr__(self, "model", "mlp")
                self.model_fields_set.add("model")
            elif not traffic_model:
                raise ValueError(f"model {self.model!r} is an image model; traffic datasets take mlp, autoencoder or gru")
            if "target_label" not in self.attack.model_fields_set:
                object.__setattr__(self.attack, "target_label", 0)
                self.attack.model_fields_set.add("target_label")
        elif traffic_model:
            raise ValueError(f"model {self.model!r} is for network-traffic datasets {list(TRAFFIC_DATASETS)}")
        return self

    @model_validator(mode="after")
    def _consistency(self) -> "ExperimentConfig":
        if "server_data" in get_defense_class(self.defense.name).context_args and self.data.server_holdout == 0:
            raise ValueError(f"defense {self.defense.name!r} needs the server's own data: set data.server_holdout > 0")
        if self.model == "autoencoder" and get_defense_class(self.defense.name).needs_classifier:
            raise ValueError(
                f"defense {self.defense.name!r} reads the model's class outputs; model 'autoencoder' is an anomaly "
                "detector with a threshold, not a classifier (use model mlp or another defense)"
            )
        if self.post_training is not None and self.model == "autoencoder":
            raise ValueError(
                f"post_training {self.post_training.name!r} repairs a classifier by its accuracy on auxiliary data; "
                "model 'autoencoder' is an anomaly detector with a threshold, not a classifier (use model mlp)"
            )
        if self.post_training is not None and self.data.server_holdout == 0:
            raise ValueError(f"post_training {self.post_training.name!r} needs an auxiliary set: set data.server_holdout > 0")
        if self.defense_from_round() > self.rounds:
            raise ValueError(
                f"defense.from_round={self.defense.from_round!r} is round {self.defense_from_round()}, after the last "
                f"round (rounds={self.rounds}); the defense would never run"
            )
        if self.clients_per_round > self.num_clients:
            raise ValueError(f"clients_per_round={self.clients_per_round} exceeds num_clients={self.num_clients}")
        need = defense_min_clients(self.defense.name, self.defense.params)
        if need > self.clients_per_round:
            raise ValueError(
                f"defense {self.defense.name!r} with defense.params={dict(self.defense.params)} needs at least {need} "
                f"clients per round, but clients_per_round={self.clients_per_round}; raise clients_per_round or change "
                "defense.params"
            )
        a = self.attack
        if a.name != "none":
            check_attack_domain(a.name, a.params, self.data.is_traffic)
            if a.num_attackers > 0 and a.start_round > self.rounds:
                raise ValueError(
                    f"attack.start_round={a.start_round} is after the last round (rounds={self.rounds}); the attack "
                    "would never run (use attack.name: none for a run without attack)"
                )
            bad = [i for i in a.ids() if not 0 <= i < self.num_clients]
            if bad:
                raise ValueError(f"attack.attacker_ids {bad} outside 0..{self.num_clients - 1}")
            if a.poison_count == "proportional" and a.poison_per_batch > self.attack_batch_size():
                raise ValueError(
                    f"attack.poison_per_batch={a.poison_per_batch} with attack.poison_count proportional is a share "
                    f"above 1 of the attackers' batch size {self.attack_batch_size()}; lower it (at most the batch size)"
                )
            if a.selection == "fixed" and a.num_attackers > self.clients_per_round:
                raise ValueError(
                    f"attack.num_attackers={a.num_attackers} fixed attackers cannot all join "
                    f"clients_per_round={self.clients_per_round}"
                )
            need = get_attack_class(a.name).min_clients(a.num_attackers)
            if a.selection == "fixed" and need > self.clients_per_round:
                raise ValueError(
                    f"attack {a.name!r} with attack.num_attackers={a.num_attackers} fixed attackers needs at least "
                    f"{need} clients per round, but clients_per_round={self.clients_per_round}"
                )
        return self


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith(_KEY_MARK) and "] " in msg:  # the key is named by the section's own validator
            key, msg = msg[len(_KEY_MARK):].split("] ", 1)
            loc = f"{loc}.{key}" if loc else key
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"got {err.get('input')!r}; allowed values: {err['ctx']['expected']}"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def non_finite_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys (``[i]`` for list items) of every NaN/Inf float in ``data``, also inside free-form ``params``."""
    if isinstance(data, float) and not math.isfinite(data):
        return [prefix or "(top level)"]
    if isinstance(data, dict):
        return [k for key, v in data.items() for k in non_finite_keys(v, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(data, (list, tuple)):
        return [k for i, v in enumerate(data) for k in non_finite_keys(v, f"{prefix}[{i}]")]
    return []


QUICK_ENV = "FEDSHIELD_QUICK"


def quick_limits(data: dict[str, Any]) -> dict[str, Any]:
    """``FEDSHIELD_QUICK=1``: the same experiment shrunk to a smoke test (docs/config.md): at most 2 rounds,
    the attack from round 2 at the latest, 2,000 training and 500 test samples, a warm start of at most 1 round.
    The resolved config records the shrunk values. Applying it twice changes nothing."""
    out = copy.deepcopy(data or {})

    def cap(section: Optional[str], key: str, limit: int, default: Any) -> None:
        node = out if section is None else out.setdefault(section, {})
        if not isinstance(node, dict):
            return
        value = node.get(key, default)
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit):
            node[key] = limit

    cap(None, "rounds", 2, 30)
    cap("data", "train_subset", 2000, None)
    cap("eval", "test_subset", 500, None)
    if isinstance(out.get("attack"), dict) and "start_round" in out["attack"]:
        cap("attack", "start_round", 2, 1)
    if isinstance(out.get("pretrain"), dict) and "rounds" in out["pretrain"]:
        cap("pretrain", "rounds", 1, 0)
    return out


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict; raise :class:`ConfigError` naming each bad key (NaN/Inf anywhere included). With
    ``FEDSHIELD_QUICK=1`` in the environment the experiment is first shrunk by :func:`quick_limits`."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"the top level of a config must be a mapping, got {type(data).__name__}")
    bad = non_finite_keys(data or {})
    if bad:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {k}: NaN/Inf is not allowed; give a finite number" for k in bad))
    if os.environ.get(QUICK_ENV, "") not in ("", "0"):
        data = quick_limits(data)
    try:
        return ExperimentConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: problem`` of a YAML error (the mark of the problem, else of its context)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-5`` and ``1E+30`` as numbers (YAML 1.2, JSON and Python do; PyYAML's
    YAML 1.1 rules want a dot, ``1.0e-5``, and made ``1e-5`` a string that a parameter check then refused as
    "not a number")."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with :class:`_YamlLoader` (every config file, grid file and ``--set`` value)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file; :class:`ConfigError` naming the file (and the line for syntax errors) when it is
    missing, a folder, not text, unreadable or not valid YAML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the path of a YAML {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a YAML {what} file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} file ({exc.strerror})") from None
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML at {_yaml_problem(exc)}") from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """:func:`read_yaml` for files whose top level must be a mapping (an empty file is ``{}``)."""
    data = read_yaml(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a {what} must be a mapping of keys, got a {type(data).__name__}")
    return data


def _parse_value(key: str, text: str) -> Any:
    try:
        return load_yaml_text(text) if text != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}={text}: the value is not valid YAML ({_yaml_problem(exc)})") from None


def set_key(data: dict[str, Any], key: str, value: Any, merge_mappings: bool = False) -> None:
    """Set the dotted ``key`` of ``data`` (in place) to ``value``, creating sections on the way.

    With ``merge_mappings`` a mapping ``value`` is merged into the section already there (a sweep's grid point
    or the demo's run changes some keys of a section and keeps the rest); otherwise it replaces it.
    """
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{key}: {p!r} is not a section")
        node = nxt
    old = node.get(parts[-1])
    if merge_mappings and isinstance(value, dict) and isinstance(old, dict):
        value = {**old, **value}
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a copy of ``data``."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"--set needs a config whose top level is a mapping, got a {type(data).__name__}")
    out = copy.deepcopy(data or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            set_key(out, key, _parse_value(key, value))
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}") from None
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config, apply ``--set`` overrides, validate."""
    data = read_yaml_mapping(path, "config")
    try:
        return config_from_dict(apply_overrides(data, overrides or []))
    except ConfigError as exc:  # the same class (a ParameterError stays one), the message names the file
        raise type(exc)(f"{path}: {exc}") from None


def dump_config(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
