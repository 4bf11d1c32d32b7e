import pytest
import torch

from fedshield.defenses import ParameterError, RoundInput, build_defense
from fedshield.models import ParamLayout


def _input(updates, sizes=None, ids=None):
    layout = ParamLayout.from_module(torch.nn.Linear(2, 1))  # d = 3
    n = updates.shape[0]
    return RoundInput(
        global_params=torch.tensor([1.0, 1.0, 1.0]),
        updates=updates,
        layout=layout,
        round=1,
        client_ids=ids or list(range(n)),
        num_samples=torch.tensor(sizes or [1.0] * n),
        generator=torch.Generator().manual_seed(0),
    )


def test_weighted_fedavg_known_answer():
    u = torch.tensor([[1.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    out = build_defense("fedavg").aggregate(_input(u, sizes=[3.0, 1.0]))
    assert torch.allclose(out.global_params, torch.tensor([1.75, 2.0, 1.0]))
    assert out.accepted.all()
    uni = build_defense("fedavg", {"weighting": "uniform"}).aggregate(_input(u, sizes=[3.0, 1.0]))
    assert torch.allclose(uni.global_params, torch.tensor([1.5, 3.0, 1.0]))


def test_non_finite_update_names_the_client():
    u = torch.tensor([[1.0, 0.0, 0.0], [0.0, float("nan"), 0.0]])
    with pytest.raises(ValueError, match=r"client\(s\) \[17\]"):
        build_defense("fedavg").aggregate(_input(u, ids=[3, 17]))


def test_wrong_shapes_are_rejected():
    with pytest.raises(ValueError, match="updates have d=5"):
        build_defense("fedavg").aggregate(_input(torch.zeros(2, 5)))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        build_defense("fedavg").aggregate(_input(torch.zeros(3)))


def test_bad_parameters_and_unknown_names():
    with pytest.raises(ParameterError, match="weighting='size'"):
        build_defense("fedavg", {"weighting": "size"})
    with pytest.raises(ParameterError, match="unknown parameter .beta."):
        build_defense("fedavg", {"beta": 1})
    with pytest.raises(ValueError, match="unknown defense 'nope'"):
        build_defense("nope")
