"""Source-specific pixel backdoors (FLAIN's setting: only base-class images are poisoned and tested)."""

from __future__ import annotations

import pytest
import torch

from fedshield.attacks import build_attack
from fedshield.attacks.backdoor import SourceClassPoisoner
from fedshield.attacks.base import AttackContext, ParameterError
from fedshield.attacks.triggers import named_trigger


def _ctx(target: int = 5) -> AttackContext:
    return AttackContext(target_label=target, poison_per_batch=20, trigger=named_trigger("plus", 1.0), num_classes=10)


def test_only_source_class_samples_are_stamped_and_relabelled():
    trig = named_trigger("square", 1.0)
    y = torch.tensor([0, 3, 0, 0, 7, 0, 5, 0])  # five class-0 samples at 0, 2, 3, 5, 7
    x = torch.zeros(8, 1, 28, 28)
    px, py = SourceClassPoisoner(trig, target=5, source=0, fraction=0.5)(x, y)
    # round(0.5 * 5) = round(2.5) = 2 (half to even): the first two class-0 samples
    assert py.tolist() == [5, 3, 5, 0, 7, 0, 5, 0]
    stamped = px.flatten(1).sum(1)
    assert stamped.tolist() == [25.0, 0, 25.0, 0, 0, 0, 0, 0]  # 5×5 square of ones at rows/cols 23-27
    assert float(px[0, 0, 23:28, 23:28].min()) == 1.0
    assert torch.equal(x, torch.zeros(8, 1, 28, 28))  # the input batch is not modified
    px, py = SourceClassPoisoner(trig, target=5, source=0, fraction=1.0)(x, y)
    assert py.tolist() == [5, 3, 5, 5, 7, 5, 5, 5]


def test_pixel_attack_with_source_class_tests_only_that_class():
    attack = build_attack("dba", {"source_class": 0, "source_fraction": 0.5}, _ctx())
    test_x = torch.zeros(6, 1, 28, 28)
    test_y = torch.tensor([0, 1, 0, 5, 2, 0])
    bx, by = attack.backdoor_test_set(test_x, test_y)
    assert by.tolist() == [5, 5, 5]
    assert float(bx[:, 0, 25, 23:28].min()) == 1.0 and float(bx[:, 0, 23:28, 25].min()) == 1.0  # global plus sign
    # without the restriction: every non-target test image
    plain = build_attack("dba", {}, _ctx())
    assert plain.backdoor_test_set(test_x, test_y)[1].numel() == 5


@pytest.mark.parametrize("params, name", [({"source_class": 5}, "source_class"), ({"source_class": 10}, "source_class"),
                                          ({"source_class": 0, "source_fraction": 0.0}, "source_fraction")])
def test_bad_source_parameters(params, name):
    with pytest.raises(ParameterError, match=name):
        build_attack("pixel", params, _ctx())
