"""Data-poisoning steps: what an attacking client trains on, and the test set that measures its backdoor.

| name | what the attacker trains on | backdoor test set |
|---|---|---|
| ``pixel`` | first ``poison_per_batch`` samples of every batch get the global trigger and the target label | global trigger on non-target test images |
| ``dba`` | as ``pixel`` with local trigger part ``rank`` (DBA, Xie et al.) | same, global trigger |
| ``pixel``/``dba`` with ``source_class: s`` | only class-s samples: ``round(source_fraction · #s)`` per batch (FLAIN's base class → target) | global trigger on the class-s test images |
| ``blended`` | first k samples blended with a full-image pattern, x' = (1 − α)x + α·pattern | blended non-target test images |
| ``semantic`` | first k samples of every batch swapped for real images of a sub-population, labelled target | held-out test images of the sub-population |
| ``edge_case`` | as ``semantic`` with a rare (tail) sub-population | held-out test images of the sub-population |
| ``label_flip`` | all its samples relabelled l → L − l − 1 | every test image with label L − l − 1 ("flip rate") |
| ``multi`` | attacker ``rank`` belongs to group ``rank mod G``; pixel trigger and target of its group | union of each group's trigger set |

Sub-populations (Fashion-MNIST defaults; the rules apply to any dataset):

* ``semantic``, rule ``stripes``: images of ``source_class`` (default 0, T-shirt/top) whose *stripe score*
  — mean |x[r+1, c] − x[r, c]| over the image divided by the share of foreground pixels (> 0.1) — is in the
  top ``fraction`` (default 10 %) of that class in the training split: "striped / patterned T-shirts", the
  analogue of Bagdasaryan's "cars with racing stripes". Alternatively ``indices``: explicit training indices;
  their backdoor test set is then those same images (Bagdasaryan et al. test on the attacker's images).
* ``edge_case``, rule: images of ``source_class`` (default 9, ankle boot) whose mean intensity is in the lowest
  ``fraction`` (default 5 %) of that class in the training split: "dark ankle boots", a rare tail of the
  distribution (Wang et al.'s edge-case examples are rare real images of one kind).

For both, the test images of ``source_class`` that pass the threshold computed on the training split form
the backdoor test set (taken from the full test split even when ``eval.test_subset`` is set, because the
sub-population is small). With ``exclude_from_benign`` (default true) the sub-population's training images
are held only by the attackers: they are removed from the benign clients' partitions, so benign clients do not
keep relearning their true label (the attacker owns that data, as in both papers). Every attacker's pool is the
whole sub-population.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import Tensor

from ..core.numeric import is_int
from .backdoor import BatchPoisoner, SourceClassPoisoner, SubstitutePoisoner, flip_labels
from ..core.errors import ParameterError
from ..core.params import Param, boolean, choice, integer, number
from ..core.registry import Registry
from .base import AttackContext, DataPoison
from .triggers import BLEND_PATTERNS, BlendTrigger, Trigger, blend_pattern, named_trigger

__all__ = ["DATA_POISONS", "build_data_poison", "check_data_domain", "stripe_score", "mean_intensity"]

DATA_POISONS: Registry[type[DataPoison]] = Registry("data poisoning", ParameterError)
_register = DATA_POISONS.register


def check_data_domain(name: str, traffic: bool) -> None:
    """Refuse data step ``name`` on a dataset of the other kind (a pixel trigger stamped on a batch of flow
    features would poison whichever rows and columns its pixel coordinates hit: a meaningless result)."""
    domain = DATA_POISONS.get(name).domain
    if domain == "image" and traffic:
        raise ParameterError(
            f"data poisoning {name!r} works on images, not on network-traffic flows; traffic datasets take "
            "feature_trigger, traffic_injection or label_flip (for a model-poisoning attack: attack.params.data)"
        )
    if domain == "traffic" and not traffic:
        raise ParameterError(
            f"data poisoning {name!r} needs a network-traffic dataset (data.dataset: synthetic_traffic, ...)"
        )


def build_data_poison(name: str, params: Mapping[str, Any] | None, ctx: AttackContext) -> DataPoison:
    check_data_domain(name, ctx.traffic is not None)
    return DATA_POISONS.get(name)(params or {}, ctx)


@_register
class PixelPoison(DataPoison):
    name = "pixel"
    domain = "image"
    summary = "pixel-pattern trigger (global trigger) on the first poison_per_batch samples of each batch"
    # source_class: poison (and test) only images of this class (FLAIN: base class 0 -> target 5); then
    # source_fraction of the class's samples in each batch are poisoned and poison_per_batch is not used
    params_spec: ClassVar[dict[str, Param]] = {
        "source_class": integer(0, default=None, nullable=True),
        "source_fraction": number(0, 1, lo_open=True, default=0.5),
    }

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        s = self.params.get("source_class")
        if s is not None and s >= ctx.num_classes:
            raise ParameterError(f"source_class={s} is invalid; the dataset has classes 0..{ctx.num_classes - 1}")
        if s is not None and s == ctx.target_label:
            raise ParameterError(f"source_class={s} is invalid; it equals attack.target_label")

    def trigger_for(self, rank: int) -> Any:
        return self.ctx.trigger

    def prepare(self, x, y, rank, generator, fraction=None):
        s = self.params.get("source_class")
        if s is not None:
            return x, y, SourceClassPoisoner(self.trigger_for(rank), self.ctx.target_label, s, self.params["source_fraction"])
        return x, y, BatchPoisoner(self.trigger_for(rank), self.ctx.target_label, self.ctx.poison_per_batch, fraction,
                                   self.ctx.poison_full_batch)

    def backdoor_test_set(self, test_x, test_y):
        s = self.params.get("source_class")
        if s is None:
            return super().backdoor_test_set(test_x, test_y)
        keep = test_y == s
        return self.ctx.trigger.apply(test_x[keep]), torch.full((int(keep.sum()),), self.ctx.target_label, dtype=torch.int64)


@_register
class DBAPoison(PixelPoison):
    name = "dba"
    summary = "distributed backdoor: attacker i stamps local part i of the global trigger"

    def trigger_for(self, rank: int) -> Any:
        return self.ctx.trigger.part(rank)


@_register
class BlendedPoison(PixelPoison):
    name = "blended"
    summary = "blended full-image trigger x' = (1-alpha) x + alpha pattern"
    params_spec: ClassVar[dict[str, Param]] = {
        "alpha": number(0, 1, lo_open=True, default=0.2),
        "pattern": choice(*BLEND_PATTERNS),
        "pattern_seed": integer(0, default=0),
    }

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        c, h, w = ctx.image_shape
        p = self.params
        self.trigger = BlendTrigger(blend_pattern(p["pattern"], c, h, w, p["pattern_seed"]), p["alpha"])

    def trigger_for(self, rank: int) -> Any:
        return self.trigger

    def backdoor_test_set(self, test_x, test_y):
        keep = test_y != self.ctx.target_label
        return self.trigger.apply(test_x[keep]), torch.full((int(keep.sum()),), self.ctx.target_label, dtype=torch.int64)


def stripe_score(x: Tensor) -> Tensor:
    """(N,) mean |vertical pixel difference| divided by the share of foreground pixels (> 0.1)."""
    g = x.float().mean(dim=1)  # (N, H, W)
    dy = (g[:, 1:, :] - g[:, :-1, :]).abs().mean(dim=(1, 2))
    fg = (g > 0.1).float().mean(dim=(1, 2)).clamp_min(1e-3)
    return dy / fg


def mean_intensity(x: Tensor) -> Tensor:
    return x.float().mean(dim=(1, 2, 3))


class _SubpopulationPoison(DataPoison):
    """Real images of a sub-population relabelled to the target (see the module docstring)."""

    domain = "image"

    highest: ClassVar[bool] = True  # keep the top (True) or bottom (False) `fraction` of scores

    def score(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        p = self.params
        if ctx.train_x is None or ctx.train_y is None or ctx.test_x is None or ctx.test_y is None:
            raise ParameterError(f"data poisoning {self.name!r} needs the training and test splits")
        if p["source_class"] >= ctx.num_classes:
            raise ParameterError(f"source_class={p['source_class']} is invalid; the dataset has {ctx.num_classes} classes")
        if p["source_class"] == ctx.target_label:
            raise ParameterError(f"source_class={p['source_class']} is invalid; must differ from attack.target_label")
        idx = p.get("indices")
        if idx:
            self.train_idx = torch.tensor(sorted(set(idx)), dtype=torch.int64)
            if int(self.train_idx.max()) >= len(ctx.train_y):
                raise ParameterError(f"indices={idx[:5]}... is invalid; training indices are < {len(ctx.train_y)}")
            self.test_images = ctx.train_x[self.train_idx]
        else:
            cls_idx = torch.nonzero(ctx.train_y == p["source_class"]).flatten()
            s = self.score(ctx.train_x[cls_idx])
            q = 1 - p["fraction"] if self.highest else p["fraction"]
            self.threshold = float(torch.quantile(s.double(), q))
            sel = s >= self.threshold if self.highest else s <= self.threshold
            self.train_idx = cls_idx[sel]
            test_cls = torch.nonzero(ctx.test_y == p["source_class"]).flatten()
            ts = self.score(ctx.test_x[test_cls])
            tsel = ts >= self.threshold if self.highest else ts <= self.threshold
            self.test_images = ctx.test_x[test_cls[tsel]]
        if len(self.train_idx) == 0 or len(self.test_images) == 0:
            raise ParameterError(f"data poisoning {self.name!r}: the sub-population is empty; raise fraction")
        self.pool = ctx.train_x[self.train_idx]

    def prepare(self, x, y, rank, generator, fraction=None):
        return x, y, SubstitutePoisoner(self.pool, self.ctx.target_label, self.ctx.poison_per_batch, generator, fraction,
                                       self.ctx.poison_full_batch)

    def backdoor_test_set(self, test_x, test_y):
        n = len(self.test_images)
        return self.test_images, torch.full((n,), self.ctx.target_label, dtype=torch.int64)

    def owned_train_indices(self) -> Optional[Tensor]:
        return self.train_idx if self.params["exclude_from_benign"] else None


def _index_list(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(is_int(i) and i >= 0 for i in v))


@_register
class SemanticPoison(_SubpopulationPoison):
    name = "semantic"
    summary = "semantic backdoor: real images of a sub-population (default striped T-shirts) relabelled to the target"
    params_spec: ClassVar[dict[str, Param]] = {
        "source_class": integer(0, default=0),
        "rule": choice("stripes"),
        "fraction": number(0, 1, lo_open=True, default=0.1),
        "indices": Param(None, _index_list, "null or a list of training indices"),
        "exclude_from_benign": boolean(True),
    }
    highest = True

    def score(self, x: Tensor) -> Tensor:
        return stripe_score(x)


@_register
class EdgeCasePoison(_SubpopulationPoison):
    name = "edge_case"
    summary = "edge-case backdoor: the darkest images of one class (a rare tail) relabelled to the target"
    params_spec: ClassVar[dict[str, Param]] = {
        "source_class": integer(0, default=9),
        "fraction": number(0, 1, lo_open=True, default=0.05),
        "exclude_from_benign": boolean(True),
    }
    highest = False

    def score(self, x: Tensor) -> Tensor:
        return mean_intensity(x)


@_register
class LabelFlipPoison(DataPoison):
    name = "label_flip"
    summary = "label flipping l -> L - l - 1 on all of the attacker's samples"

    def prepare(self, x, y, rank, generator, fraction=None):
        return x, flip_labels(y, self.ctx.num_classes), None

    def backdoor_test_set(self, test_x, test_y):
        return test_x, flip_labels(test_y, self.ctx.num_classes)


def _groups(v: Any) -> bool:
    if not isinstance(v, list) or len(v) < 1:
        return False
    for g in v:
        if not isinstance(g, dict) or set(g) - {"pattern", "pixels", "value", "target_label"}:
            return False
        if "target_label" not in g or not isinstance(g["target_label"], int) or g["target_label"] < 0:
            return False
        if ("pattern" in g) == ("pixels" in g):
            return False
    return True


@_register
class MultiBackdoorPoison(DataPoison):
    name = "multi"
    domain = "image"
    summary = "several backdoors at once: attacker rank i uses group i mod G (its own pixel trigger and target)"
    params_spec: ClassVar[dict[str, Param]] = {
        "groups": Param(
            [{"pattern": "square", "target_label": 1}, {"pattern": "plus", "target_label": 7}],
            _groups,
            "a non-empty list of {pattern: NAME | pixels: [[r, c], ...], value: V, target_label: L}",
        ),
    }

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        self.triggers: list[tuple[Trigger, int]] = []
        for i, g in enumerate(self.params["groups"]):
            value = float(g.get("value", 1.0))
            try:
                trig = named_trigger(g["pattern"], value) if "pattern" in g else Trigger(
                    tuple((int(r), int(c)) for r, c in g["pixels"]), value
                )
                trig.mask(ctx.image_shape[1], ctx.image_shape[2])
            except ValueError as exc:
                raise ParameterError(f"groups[{i}] is invalid; {exc}") from None
            if g["target_label"] >= ctx.num_classes:
                raise ParameterError(f"groups[{i}].target_label={g['target_label']} is invalid; < {ctx.num_classes}")
            self.triggers.append((trig, int(g["target_label"])))

    def group_of(self, rank: int) -> int:
        return rank % len(self.triggers)

    def prepare(self, x, y, rank, generator, fraction=None):
        trig, target = self.triggers[self.group_of(rank)]
        return x, y, BatchPoisoner(trig, target, self.ctx.poison_per_batch, fraction, self.ctx.poison_full_batch)

    def backdoor_test_set(self, test_x, test_y):
        xs, ys = [], []
        for trig, target in self.triggers:
            keep = test_y != target
            xs.append(trig.apply(test_x[keep]))
            ys.append(torch.full((int(keep.sum()),), target, dtype=torch.int64))
        return torch.cat(xs), torch.cat(ys)
