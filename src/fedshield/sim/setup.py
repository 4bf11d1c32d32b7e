"""Turn a validated config into the experiment description a run needs: data split, model, trainer, evaluator,
the defense to build, the attack and its clients.

:class:`Setup` is frozen: nothing in it changes while the run trains. What does change from round to round (the
global model, the defense's history, the model the previous round started from) lives in
:class:`fedshield.sim.state.RoundState`, which the checkpoint saves and restores.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ..attacks import Attack, AttackContext, Trigger, build_attack, named_trigger
from ..config import QUICK_ENV, ConfigError, ExperimentConfig, TrainConfig
from ..data import Dataset, TrafficOptions, load_dataset, partition
from ..defenses import Defense, DefenseContext, build_defense
from ..defenses.schedule import scheduled
from ..models import ParamLayout, build_model, flatten_params
from .evaluate import Evaluator
from ..core.seeding import derive_seed, numpy_stream
from .train import ParallelTrainer, TrainSettings, local_train_function

__all__ = ["Setup", "build_setup", "train_settings", "global_trigger", "with_start", "check_device", "traffic_load_args"]


def traffic_load_args(cfg: ExperimentConfig) -> dict[str, Any]:
    """The preprocessing options (and synthetic generator arguments) of a traffic dataset; {} for images."""
    if not cfg.data.is_traffic:
        return {}
    t = cfg.data.traffic
    opts = TrafficOptions(
        label=t.label, scaling=t.scaling, log1p=t.log1p, drop_ports=t.drop_ports, test_fraction=t.test_fraction,
        split_seed=t.split_seed, max_rows=t.max_rows, max_categories=t.max_categories,
    )
    return {"traffic": opts, "synthetic": t.synthetic.model_dump(), "window": t.window}


def check_device(device: str) -> None:
    """:class:`ConfigError` naming ``device`` when this machine has no such device (checked before data loads)."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (index and int(index) >= count):
            raise ConfigError(f"device={device!r} is not available on this machine ({count} CUDA device(s)); "
                              "use device: cpu")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} is not available on this machine; use device: cpu")


def train_settings(tc: TrainConfig) -> TrainSettings:
    return TrainSettings(
        lr=tc.lr,
        momentum=tc.momentum,
        weight_decay=tc.weight_decay,
        epochs=tc.epochs,
        batch_size=tc.batch_size,
        milestones=tuple(tc.milestones),
        gamma=tc.gamma,
    )


def global_trigger(cfg: ExperimentConfig) -> Trigger:
    t = cfg.attack.trigger
    if t.pattern is not None:
        return named_trigger(t.pattern, t.value)
    return Trigger(tuple((int(r), int(c)) for r, c in t.pixels or ()), t.value)


def stratified_holdout(labels: Tensor, count: int, num_classes: int, seed: int) -> Tensor:
    """``count`` training indices, as even across classes as possible (count // L each, remainder to the first
    classes), drawn at random: the server's own data (FLTrust root set, FLAIN auxiliary set)."""
    if count == 0:
        return torch.empty(0, dtype=torch.int64)
    rng = numpy_stream(seed, "server_holdout")
    picks = []
    for c in range(num_classes):
        want = count // num_classes + (1 if c < count % num_classes else 0)
        idx = torch.nonzero(labels == c).flatten().numpy()
        if want > len(idx):
            raise ConfigError(f"data.server_holdout={count} asks for {want} samples of class {c}, which has {len(idx)}")
        picks.append(torch.from_numpy(rng.choice(idx, size=want, replace=False)))
    return torch.cat(picks).sort().values


@dataclass(frozen=True)
class Setup:
    """The experiment description: everything a run needs that does not change while it trains.

    ``initial_params`` is the random initial model (seeded); ``start_params`` the model round 1 starts from
    (the same, or the clean warm start of ``pretrain.rounds``). ``new_defense()`` builds a fresh defense
    (a run keeps the live one, with its history, in its :class:`~fedshield.sim.state.RoundState`).
    """

    cfg: ExperimentConfig
    dataset: Dataset
    client_indices: list[Tensor]
    server_indices: Tensor
    model_fn: Callable[[], nn.Module]
    layout: ParamLayout
    initial_params: Tensor
    trainer: ParallelTrainer
    evaluator: Evaluator
    defense_context: DefenseContext
    benign_settings: TrainSettings
    attack_settings: TrainSettings
    attackers: list[int] = field(default_factory=list)
    attack: Optional[Attack] = None  # None when attack.name is "none"
    attacker_rank: dict[int, int] = field(default_factory=dict)  # client id -> 0-based rank among attackers
    start_params: Optional[Tensor] = None  # None: initial_params

    @property
    def start(self) -> Tensor:
        """The model round 1 starts from."""
        return self.initial_params if self.start_params is None else self.start_params

    def new_defense(self) -> Defense:
        """The configured defense, plain FedAvg before ``defense.from_round`` (:func:`scheduled`)."""
        inner = build_defense(self.cfg.defense.name, self.cfg.defense.params, self.defense_context)
        return scheduled(inner, self.cfg.defense_from_round())

    def client_data(self, cid: int) -> tuple[Tensor, Tensor]:
        idx = self.client_indices[cid]
        return self.dataset.train_x[idx], self.dataset.train_y[idx]

    def server_data(self) -> tuple[Tensor, Tensor]:
        return self.dataset.train_x[self.server_indices], self.dataset.train_y[self.server_indices]


def with_start(setup: Setup, start_params: Tensor) -> Setup:
    """A copy of ``setup`` whose rounds start from ``start_params`` (a warm start)."""
    return replace(setup, start_params=start_params)


def _warn_if_capped(key: str, asked: Optional[int], available: int, split: str, dataset: str) -> None:
    """A subset larger than the split uses the whole split: say so (FEDSHIELD_QUICK's caps are not the user's)."""
    if asked is not None and asked > available and not os.environ.get(QUICK_ENV):
        warnings.warn(f"{key}={asked} is larger than {dataset!r}'s {split} split ({available} samples); "
                      f"all {available} are used", UserWarning, stacklevel=3)


def build_setup(cfg: ExperimentConfig) -> Setup:
    check_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(cfg.data.dataset, cfg.data.root, **traffic_load_args(cfg))
    n_train = len(ds.train_y) if cfg.data.train_subset is None else min(cfg.data.train_subset, len(ds.train_y))
    _warn_if_capped("data.train_subset", cfg.data.train_subset, len(ds.train_y), "training", cfg.data.dataset)
    _warn_if_capped("eval.test_subset", cfg.eval.test_subset, len(ds.test_y), "test", cfg.data.dataset)
    labels = ds.train_y[:n_train]
    server_idx = stratified_holdout(labels, cfg.data.server_holdout, ds.num_classes, cfg.seed)
    keep = torch.ones(n_train, dtype=torch.bool)
    keep[server_idx] = False
    client_pool = torch.nonzero(keep).flatten()
    devices = None
    if cfg.data.partition == "by_device":
        if ds.traffic is None or ds.traffic.train_device is None:
            raise ConfigError(f"data.partition=by_device: dataset {cfg.data.dataset!r} records no device per flow")
        devices = ds.traffic.train_device[:n_train]
    parts = partition(
        labels,
        cfg.num_clients,
        cfg.data.partition,
        derive_seed(cfg.seed, "partition"),
        alpha=cfg.data.alpha,
        fraction=cfg.data.fraction,
        q=cfg.data.q,
        indices=client_pool,
        devices=devices,
        share=cfg.data.attack_free_share,
    )
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        more = ", a larger data.alpha" if cfg.data.partition == "dirichlet" else ""
        raise ConfigError(
            f"data.partition={cfg.data.partition!r} left {len(empty)} of {cfg.num_clients} clients without samples "
            f"(clients {empty[:10]}{' ...' if len(empty) > 10 else ''}) from {len(client_pool)} training samples; "
            f"use fewer num_clients{more} or more training samples (data.train_subset)"
        )

    norm: dict[str, list[float]] = {}
    if ds.traffic is not None:
        pass  # flow features are scaled by the traffic preprocessing (fitted on the training split)
    elif cfg.data.normalize == "standard":
        # float64 and rounded to 6 decimals: identical whatever the thread count (a float32 reduction is not)
        x64 = ds.train_x.to(torch.float64)
        norm = {
            "input_mean": [round(v, 6) for v in x64.mean(dim=(0, 2, 3)).tolist()],
            "input_std": [round(v, 6) for v in x64.std(dim=(0, 2, 3)).tolist()],
        }
        flat = [c for c, v in enumerate(norm["input_std"]) if not v > 0]
        if flat:
            raise ConfigError(
                f"data.normalize=standard: channel(s) {flat} of the {cfg.data.dataset} training images are constant "
                "(standard deviation 0), so they cannot be standardised; check the data files, or set "
                "data.normalize: none"
            )
    if ds.traffic is not None:
        model_fn = partial(build_model, cfg.model, num_classes=ds.num_classes, num_features=ds.num_features)
    else:
        model_fn = partial(build_model, cfg.model, ds.in_channels, ds.num_classes, ds.image_size, **norm)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    init_model = model_fn()
    layout = ParamLayout.from_module(init_model)
    initial = flatten_params(init_model, layout)

    trigger = global_trigger(cfg) if cfg.attack.name != "none" else None
    if trigger is not None and cfg.attack.target_label >= ds.num_classes:
        raise ConfigError(f"attack.target_label={cfg.attack.target_label} but the dataset has {ds.num_classes} classes")
    if trigger is not None and ds.traffic is None:
        key = "attack.trigger.pattern" if cfg.attack.trigger.pattern is not None else "attack.trigger.pixels"
        try:
            trigger.mask(ds.image_size, ds.image_size)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc} (pixels are [row, column], 0-based)") from None
    attack: Optional[Attack] = None
    attackers: list[int] = []
    if cfg.attack.name != "none":
        ctx = AttackContext(
            target_label=cfg.attack.target_label,
            poison_per_batch=cfg.attack.poison_per_batch,
            poison_full_batch=cfg.attack_batch_size() if cfg.attack.poison_count == "proportional" else None,
            trigger=trigger,
            num_classes=ds.num_classes,
            image_shape=tuple(ds.train_x.shape[1:]),  # type: ignore[arg-type]
            train_x=ds.train_x[:n_train],
            train_y=labels,
            test_x=ds.test_x,
            test_y=ds.test_y,
            layout=layout,
            seed=cfg.seed,
            num_attackers=cfg.attack.num_attackers,
            traffic=ds.traffic.subset_train(n_train) if ds.traffic is not None else None,
        )
        attack = build_attack(cfg.attack.name, cfg.attack.params, ctx)
        attackers = cfg.attack.ids() if cfg.attack.num_attackers > 0 else []
        owned = attack.owned_train_indices()
        if owned is not None and len(owned):
            # sub-population backdoors: only the attackers hold these images (benign clients lose them)
            drop = torch.zeros(n_train, dtype=torch.bool)
            drop[owned] = True
            aset = set(attackers)
            parts = [p if i in aset else p[~drop[p]] for i, p in enumerate(parts)]
            empty = [i for i, p in enumerate(parts) if len(p) == 0]
            if empty:
                raise ConfigError(f"removing the attack's sub-population left clients {empty[:10]} without samples")
    test_x, test_y = ds.test_x, ds.test_y
    if cfg.eval.test_subset is not None and cfg.eval.test_subset < len(test_y):
        sub = torch.from_numpy(numpy_stream(cfg.seed, "test_subset").choice(len(test_y), cfg.eval.test_subset, replace=False))
        test_x, test_y = test_x[sub.sort().values], test_y[sub.sort().values]
    backdoor_set = attack.backdoor_test_set(test_x, test_y) if attack is not None else None
    if backdoor_set is not None and len(backdoor_set[1]) == 0:
        subset = f"eval.test_subset={cfg.eval.test_subset} leaves" if cfg.eval.test_subset is not None else "there is"
        raise ConfigError(
            f"attack {cfg.attack.name!r}: {subset} no test sample for the backdoor test set (samples whose label is "
            f"not attack.target_label={cfg.attack.target_label}, or the attack's sub-population), so BA cannot be "
            "measured; use a larger eval.test_subset"
        )
    calibration_x = None
    if cfg.model == "autoencoder":
        benign_held = server_idx[labels[server_idx] == 0]
        if len(benign_held) < 2:
            raise ConfigError(
                "model autoencoder sets its threshold on held-out benign flows: set data.server_holdout "
                "(e.g. 500) so the server holds some"
            )
        calibration_x = ds.train_x[benign_held]
    evaluator = Evaluator(
        model_fn, test_x, test_y, cfg.eval.batch_size, cfg.device, backdoor_set=backdoor_set,
        traffic=ds.traffic is not None, calibration_x=calibration_x,
    )
    server_data = (ds.train_x[server_idx], ds.train_y[server_idx]) if len(server_idx) else None
    context = DefenseContext(
        layout=layout,
        model_fn=model_fn,
        server_data=server_data,
        num_classes=ds.num_classes,
        device=cfg.device,
        # input_shape: DeepSight's random DDif inputs; domain: "traffic" or "image" (FLAME's default λ)
        extra={"input_shape": tuple(ds.train_x.shape[1:]), "domain": ds.kind},
        local_train=local_train_function(model_fn, cfg.device),  # FLTrust's server update
    )
    defense = build_defense(cfg.defense.name, cfg.defense.params, context)  # fail now, before anything trains
    if defense.min_clients() > cfg.clients_per_round:
        raise ConfigError(
            f"defense {cfg.defense.name!r} with defense.params={dict(cfg.defense.params)} needs at least "
            f"{defense.min_clients()} clients per round, but clients_per_round={cfg.clients_per_round}; raise "
            "clients_per_round or change defense.params"
        )

    benign = train_settings(cfg.train)
    attack_train = train_settings(cfg.attack.train) if cfg.attack.train is not None else benign
    return Setup(
        cfg=cfg,
        dataset=ds,
        client_indices=parts,
        server_indices=server_idx,
        model_fn=model_fn,
        layout=layout,
        initial_params=initial,
        trainer=ParallelTrainer(model_fn, cfg.workers, cfg.device),
        evaluator=evaluator,
        defense_context=context,
        benign_settings=benign,
        attack_settings=attack_train,
        attackers=attackers,
        attack=attack,
        attacker_rank={cid: rank for rank, cid in enumerate(attackers)},
    )
