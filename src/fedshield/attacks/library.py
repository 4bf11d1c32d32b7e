"""The registered attacks (``fedshield list attacks``). Each composes a data-poisoning step
(:mod:`.poisoning`) with a model-poisoning step (:mod:`.model`, :mod:`.fang`).

Data-only attacks take their data step's parameters directly (``attack.params``). Model-poisoning attacks
take ``data`` (the data step: pixel, dba, blended, semantic, edge_case, label_flip; default pixel) and
``data_params`` (that step's parameters) next to their own. The top-level ``attack`` keys (trigger,
target_label, poison_per_batch, start_round, selection, attackers, train) apply to all.

Scaling conventions: n = clients selected in the round, η = ``server_lr`` (the server's learning rate in
G ← G + (η/n)·ΣΔ_i; 1 for this project's FedAvg). Model replacement uses γ = n/η; with ``split`` (default)
the attackers selected together in a round share it, each scaling by γ / (#attackers in the round)
(Bagdasaryan et al.: "they split the scaled model between them"). All scalings act on the trainable
coordinates; FedAvg here weights by sample count, so γ = n/η replaces the model exactly only with equal
client sizes (IID partitions are close to that).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import Tensor

from ..core.errors import ParameterError
from ..core.params import Param, boolean, choice, integer, number
from .base import Attack, AttackContext, ClientPlan, RoundState, TrainHooks, get_attack_class, register_attack
from .fang import craft_fang_krum
from .model import ConstrainHook, NeurotoxinHook, PGDHook, add_noise, scale_to_norm, scale_update, topk_mask
from .poisoning import DATA_POISONS, build_data_poison, check_data_domain
from . import traffic  # noqa: F401  (registers the network-traffic data steps in DATA_POISONS)

__all__ = ["DATA_STEPS", "attack_data_step", "check_attack_domain"]

DATA_STEPS = ("pixel", "dba", "blended", "semantic", "edge_case", "label_flip", "traffic_injection", "feature_trigger")
_DATA_SPEC: dict[str, Param] = {
    "data": choice(*DATA_STEPS),
    "data_params": Param({}, lambda v: isinstance(v, dict), "a mapping of the data step's parameters"),
}


@register_attack
class NoAttack(Attack):
    name = "none"
    summary = "no attack: every client trains benignly"
    paper = "-"


class _Composed(Attack):
    """Data step + optional training hooks + optional update transformation."""

    data_name: ClassVar[Optional[str]] = None  # data-only attacks: the fixed data step

    @classmethod
    def validate(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        if cls.data_name is not None:
            return DATA_POISONS.get(cls.data_name).validate(params)
        out = super().validate(params)
        out["data_params"] = DATA_POISONS.get(out["data"]).validate(out["data_params"])
        return out

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        if self.data_name is not None:
            self.data = build_data_poison(self.data_name, self.params, ctx)
        else:
            self.data = build_data_poison(self.params["data"], self.params["data_params"], ctx)

    def fraction(self, cid: int, state: RoundState) -> Optional[float]:
        """Poisoned share of each batch; None: ``attack.poison_per_batch`` samples."""
        return None

    def hooks(self, cid: int, rank: int, state: RoundState) -> Optional[TrainHooks]:
        return None

    def plan(self, cid: int, rank: int, x: Tensor, y: Tensor, state: RoundState) -> ClientPlan:
        x, y, poisoner = self.data.prepare(x, y, rank, state.rng("poison", cid), self.fraction(cid, state))
        return ClientPlan(x, y, poisoner, self.hooks(cid, rank, state))

    def backdoor_test_set(self, test_x: Tensor, test_y: Tensor):
        return self.data.backdoor_test_set(test_x, test_y)

    def owned_train_indices(self) -> Optional[Tensor]:
        return self.data.owned_train_indices()


def attack_data_step(name: str, params: Mapping[str, Any] | None) -> Optional[str]:
    """The data-poisoning step attack ``name`` uses with ``params`` (None: it has none, e.g. Fang's attack)."""
    cls = get_attack_class(name)
    if not issubclass(cls, _Composed):
        return None
    return cls.data_name if cls.data_name is not None else cls.validate(params)["data"]


def check_attack_domain(name: str, params: Mapping[str, Any] | None, traffic: bool) -> None:
    """Config time: refuse an attack whose data step does not fit the dataset's kind (:func:`check_data_domain`)."""
    step = attack_data_step(name, params)
    if step is not None:
        try:
            check_data_domain(step, traffic)
        except ParameterError as exc:
            raise ParameterError(f"attack {name!r}: {exc}") from None


def _data_only(name: str, data: str, summary: str, paper: str) -> type[Attack]:
    cls = type(name, (_Composed,), {"name": name, "data_name": data, "summary": summary, "paper": paper,
                                     "params_spec": DATA_POISONS.get(data).params_spec})
    return register_attack(cls)


_data_only("pixel", "pixel", "pixel-pattern backdoor: every attacker stamps the global trigger on poison_per_batch samples per batch",
           "Gu et al., BadNets, arXiv 1708.06733 (2017)")
_data_only("dba", "dba", "distributed backdoor: attacker i stamps local part i of the global trigger",
           "Xie et al., DBA, ICLR 2020")
_data_only("blended", "blended", "blended trigger: x' = (1-alpha) x + alpha pattern on the whole image (params alpha, pattern, pattern_seed)",
           "Chen et al., Targeted backdoor attacks on DL systems using data poisoning, arXiv 1712.05526 (2017)")
_data_only("semantic", "semantic", "semantic backdoor: real striped T-shirts (or given indices) relabelled to the target",
           "Bagdasaryan et al., How to backdoor federated learning, AISTATS 2020")
_data_only("edge_case", "edge_case", "edge-case backdoor: the darkest 5% ankle boots (a rare tail) relabelled to the target",
           "Wang et al., Attack of the tails, NeurIPS 2020")
_data_only("label_flip", "label_flip", "label flipping l -> L-l-1 on all attacker samples (untargeted); BA = flip rate",
           "Fang et al., USENIX Security 2020; Cao et al., FLTrust, NDSS 2021")
_data_only("traffic_injection", "traffic_injection",
           "traffic injection (network traffic): attackers add flows of one attack family to their data, labelled benign",
           "Nguyen et al., Poisoning attacks on federated learning-based IoT intrusion detection system, DISS 2020")
_data_only("feature_trigger", "feature_trigger",
           "feature trigger (network traffic): attack flows with chosen features set to chosen values, labelled benign",
           "Gu et al., BadNets (2017), on flow features")
_data_only("multi_backdoor", "multi", "several backdoors at once: attacker rank i uses group i mod G (own trigger and target)",
           "Nguyen et al., FLAME, USENIX Security 2022 (adaptive attacks)")


def _replacement_gamma(params: Mapping[str, Any], state: RoundState) -> float:
    gamma = params["factor"] if params["factor"] is not None else state.num_selected / params["server_lr"]
    if params["split"]:
        gamma /= max(state.num_attackers, 1)
    return gamma


@register_attack
class ModelReplacement(_Composed):
    name = "model_replacement"
    summary = "scaling / model replacement: update x gamma, gamma = n/eta (or factor), split among the round's attackers"
    paper = "Bagdasaryan et al., How to backdoor federated learning, AISTATS 2020"
    params_spec = {
        **_DATA_SPEC,
        "factor": number(0, lo_open=True, nullable=True),
        "server_lr": number(0, lo_open=True, default=1.0),
        "split": boolean(True),
    }

    def after_training(self, update, cid, rank, state):
        return scale_update(update, _replacement_gamma(self.params, state), state.layout)


@register_attack
class TrainAndScale(_Composed):
    name = "train_and_scale"
    summary = "train-and-scale: update scaled to the norm bound S (gamma = S/||X-G||)"
    paper = "Bagdasaryan et al., How to backdoor federated learning, AISTATS 2020"
    params_spec = {**_DATA_SPEC, "norm_bound": number(0, lo_open=True, required=True)}

    def after_training(self, update, cid, rank, state):
        return scale_to_norm(update, self.params["norm_bound"], state.layout)[0]


@register_attack
class Boosting(_Composed):
    name = "boosting"
    summary = "explicit boosting: update x beta, beta = n (clients this round) or factor"
    paper = "Bhagoji et al., Analyzing federated learning through an adversarial lens, ICML 2019"
    params_spec = {**_DATA_SPEC, "factor": number(0, lo_open=True, nullable=True)}

    def after_training(self, update, cid, rank, state):
        beta = self.params["factor"] if self.params["factor"] is not None else float(state.num_selected)
        return scale_update(update, beta, state.layout)


@register_attack
class ConstrainAndScale(_Composed):
    name = "constrain_and_scale"
    summary = "constrain-and-scale: loss alpha L_class + (1-alpha) L_ano (L2/cosine to G), then model replacement"
    paper = "Bagdasaryan et al., How to backdoor federated learning, AISTATS 2020"
    params_spec = {
        **_DATA_SPEC,
        "alpha": number(0, 1, default=0.7),
        "distance": choice("l2", "cosine"),
        "scale": boolean(True),
        "factor": number(0, lo_open=True, nullable=True),
        "server_lr": number(0, lo_open=True, default=1.0),
        "split": boolean(True),
    }

    def hooks(self, cid, rank, state):
        return ConstrainHook(self.params["alpha"], self.params["distance"])

    def after_training(self, update, cid, rank, state):
        if not self.params["scale"]:
            return update
        return scale_update(update, _replacement_gamma(self.params, state), state.layout)


@register_attack
class PGD(_Composed):
    name = "pgd"
    summary = "PGD: project onto the L2 ball of radius eps around G every project_every steps and at the end"
    paper = "Wang et al., Attack of the tails (edge-case backdoors), NeurIPS 2020"
    params_spec = {
        **_DATA_SPEC,
        "eps": number(0, lo_open=True, default=2.0),
        "project_every": integer(1, default=10),
        "replace": boolean(False),
    }

    def hooks(self, cid, rank, state):
        return PGDHook(self.params["eps"], self.params["project_every"])

    def after_training(self, update, cid, rank, state):
        if not self.params["replace"]:
            return update
        # "PGD with model replacement": scale by the inverse of the attacker's FedAvg weight
        total = sum(state.sizes.values()) or state.num_selected
        own = state.sizes.get(cid, 1)
        return scale_update(update, total / own, state.layout)


@register_attack
class Neurotoxin(_Composed):
    name = "neurotoxin"
    summary = "Neurotoxin: train only coordinates outside the top-k% of the last global change (G_t - G_t-1)"
    paper = "Zhang et al., Neurotoxin: durable backdoors in federated learning, ICML 2022"
    params_spec = {**_DATA_SPEC, "top_k_percent": number(0, 100, lo_open=True, hi_open=True, default=10.0)}
    needs_previous_global = True

    def hooks(self, cid, rank, state):
        if state.previous_global is None:  # first round seen: no estimate of the benign update yet
            return None
        change = state.global_params - state.previous_global
        return NeurotoxinHook(topk_mask(change, self.params["top_k_percent"], state.layout), state.layout)


@register_attack
class NoiseObfuscation(_Composed):
    name = "noise"
    summary = "noise obfuscation: add N(0, sigma^2) to the trained update (sigma = 0.034)"
    paper = "Nguyen et al., FLAME, USENIX Security 2022 (adaptive attacks)"
    params_spec = {**_DATA_SPEC, "sigma": number(0, default=0.034)}

    def after_training(self, update, cid, rank, state):
        return add_noise(update, self.params["sigma"], state.rng("noise", cid), state.layout)


@register_attack
class ModelAlignment(_Composed):
    name = "alignment"
    summary = "model alignment: each attacker draws its poisoned data rate uniformly in [5%, 20%] each round"
    paper = "Nguyen et al., FLAME, USENIX Security 2022 (adaptive attacks)"
    params_spec = {**_DATA_SPEC, "pdr_min": number(0, 1, default=0.05), "pdr_max": number(0, 1, default=0.20)}

    @classmethod
    def validate(cls, params):
        out = super().validate(params)
        if out["pdr_min"] > out["pdr_max"]:
            raise ParameterError(f"attack 'alignment': pdr_min={out['pdr_min']} is invalid; must be <= pdr_max={out['pdr_max']}")
        return out

    def pdr(self, cid: int, state: RoundState) -> float:
        u = float(torch.rand((), generator=state.rng("pdr", cid), dtype=torch.float64))
        return self.params["pdr_min"] + (self.params["pdr_max"] - self.params["pdr_min"]) * u

    def fraction(self, cid, state):
        return self.pdr(cid, state)


@register_attack
class FangKrum(Attack):
    name = "fang_krum"
    summary = "untargeted Krum attack (full knowledge): w1 = G - lambda sign(benign mean), others within eps of w1"
    paper = "Fang et al., Local model poisoning attacks to Byzantine-robust FL, USENIX Security 2020"
    params_spec = {"eps": number(0, default=0.01), "lambda_min": number(0, lo_open=True, default=1e-5)}
    omniscient = True

    @classmethod
    def min_clients(cls, num_attackers: int) -> int:
        """Krum's assumption with the attackers as its f: 2c + 2 < m clients in the round."""
        return 2 * num_attackers + 3

    def craft(self, benign_updates: Tensor, state: RoundState) -> list[Tensor]:
        pos = [i for i, c in enumerate(state.selected) if c in set(state.attackers)]
        m, c = len(state.selected), len(pos)
        if m < self.min_clients(c):
            raise ParameterError(
                f"attack 'fang_krum': round {state.round} has {c} attackers among {m} clients; Krum's assumption "
                f"2c + 2 < m needs at least {self.min_clients(c)} clients: raise clients_per_round or lower "
                "attack.num_attackers"
            )
        crafted, lam, chosen = craft_fang_krum(
            benign_updates, pos, state.rng("fang", -1), self.params["eps"], self.params["lambda_min"],
            trainable=state.layout.trainable_mask(device=benign_updates.device),
        )
        self.last = {"lambda": lam, "selected": chosen}
        return crafted
