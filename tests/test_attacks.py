"""Attacks: each mechanism checked directly (issue 5), plus the registry, parameter validation and the seam."""

import math

import pytest
import torch

from fedshield.attacks import (
    BatchPoisoner,
    BlendTrigger,
    ParameterError,
    RoundState,
    available_attacks,
    blend_pattern,
    build_attack,
    flip_labels,
    validate_attack_params,
)
from fedshield.attacks.base import AttackContext
from fedshield.attacks.fang import craft_fang_krum, fang_lambda_max
from fedshield.attacks.model import ConstrainHook, NeurotoxinHook, PGDHook, add_noise, scale_to_norm, topk_mask
from fedshield.cli import main
from fedshield.config import ConfigError, config_from_dict
from fedshield.core.numeric import krum_select
from fedshield.models import ParamLayout, build_model, flatten_params
from fedshield.sim.loop import train_clients
from fedshield.sim.setup import build_setup
from fedshield.sim.train import LocalTrainer, TrainSettings


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _trainer():
    torch.manual_seed(0)
    t = LocalTrainer(lambda: build_model("small_cnn"))
    return t, flatten_params(build_model("small_cnn"))


def _state(layout, n=10, attackers=(0, 1), round_=3, **kw):
    return RoundState(round=round_, global_params=torch.zeros(layout.dim), previous_global=None,
                      selected=list(range(n)), attackers=list(attackers), layout=layout, seed=0, **kw)


SETTINGS = TrainSettings(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=16)


# ------------------------------------------------------------------------------------ update level


def test_model_replacement_scales_by_n_over_eta_split_among_attackers():
    layout = ParamLayout.from_module(build_model("small_cnn"))
    upd = torch.randn(layout.dim, generator=torch.Generator().manual_seed(1))
    state = _state(layout, n=10, attackers=(0, 1))
    a = build_attack("model_replacement", {}, AttackContext(trigger=None))
    assert torch.allclose(a.after_training(upd, 0, 0, state), upd * 10 / 2)  # gamma = n/eta / #attackers
    a = build_attack("model_replacement", {"server_lr": 0.5, "split": False}, AttackContext())
    assert torch.allclose(a.after_training(upd, 0, 0, state), upd * 20)
    a = build_attack("boosting", {"factor": 3.0}, AttackContext())
    assert torch.allclose(a.after_training(upd, 0, 0, state), upd * 3)
    scaled, gamma = scale_to_norm(upd, 2.5, layout)
    assert scaled.norm() == pytest.approx(2.5, rel=1e-5) and torch.allclose(scaled, gamma * upd)


def test_scaled_update_is_gamma_times_the_trained_one_in_the_loop():
    base = {
        "seed": 1, "model": "small_cnn", "num_clients": 6, "clients_per_round": 4, "rounds": 1, "workers": 1,
        "data": {"dataset": "synthetic", "train_subset": 240}, "train": {"lr": 0.05, "epochs": 1, "batch_size": 20},
        "eval": {"test_subset": 50},
    }
    atk = {"num_attackers": 2, "poison_per_batch": 5, "trigger": {"pattern": "square"}}
    plain = build_setup(config_from_dict({**base, "attack": {**atk, "name": "pixel"}}))
    scaled = build_setup(config_from_dict({**base, "attack": {**atk, "name": "model_replacement"}}))
    sel = [0, 1, 2, 3]
    u0, m0, s0 = train_clients(plain, plain.initial_params, sel, 1)
    u1, m1, s1 = train_clients(scaled, scaled.initial_params, sel, 1)
    assert m0 == m1 == [True, True, False, False] and s0 == s1
    for a, b, bad in zip(u0, u1, m0):
        assert torch.allclose(b, a * (4 / 2 if bad else 1.0))  # gamma = n/eta = 4, split over 2 attackers


def test_noise_obfuscation_std_on_a_fixed_seed():
    u = torch.zeros(200_000)
    a = add_noise(u, 0.034, torch.Generator().manual_seed(7))
    b = add_noise(u, 0.034, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(0.034, rel=0.01) and abs(float(a.mean())) < 1e-3


# ---------------------------------------------------------------------------------- training hooks


def test_pgd_keeps_the_model_in_the_eps_ball():
    t, g = _trainer()
    x, y = _data()
    free = t.train(g, x, y, SETTINGS, torch.Generator().manual_seed(0))
    assert float(free.norm()) > 0.3
    upd = t.train(g, x, y, SETTINGS, torch.Generator().manual_seed(0), None, PGDHook(0.3, project_every=4))
    mask = t.layout.trainable_mask()
    assert float(upd[mask].norm()) <= 0.3 + 1e-6
    assert float(upd[mask].norm()) == pytest.approx(0.3, rel=1e-3)  # it was outside, so it ends on the sphere


def test_constrain_loss_has_a_gradient_through_the_anomaly_term():
    model = build_model("small_cnn")
    layout = ParamLayout.from_module(model)
    named = dict(model.named_parameters())
    params = [named[e.name] for e in layout.trainable_entries()]
    glob = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    for distance in ("l2", "cosine"):
        hook = ConstrainHook(alpha=0.0, distance=distance)  # only L_ano remains
        hook.begin(params, glob)
        model.zero_grad()
        zero_class_loss = torch.zeros((), requires_grad=True)
        hook.loss(zero_class_loss, params).backward()
        gnorm = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in params))
        assert gnorm > 0 and all(torch.isfinite(p.grad).all() for p in params)
    # at W = G the L2 term has a finite gradient too (no NaN on the first step)
    hook = ConstrainHook(alpha=0.5)
    hook.begin(params, [p.detach().clone() for p in params])
    model.zero_grad()
    hook.loss(torch.zeros((), requires_grad=True), params).backward()
    assert all(torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_constrain_loss_weights_class_and_anomaly_terms_by_alpha(alpha):
    """L = alpha L_class + (1 - alpha) L_ano exactly (Bagdasaryan et al., Eq. 3): the value and both gradients
    on hand-computed inputs, so a swapped or misapplied alpha fails."""
    w = torch.tensor([3.0, 4.0, 1.0], requires_grad=True)
    g = torch.tensor([0.0, 0.0, 1.0])
    hook = ConstrainHook(alpha=alpha, distance="l2")
    hook.begin([w], [g])
    class_loss = torch.tensor(2.0, requires_grad=True)
    loss = hook.loss(class_loss, [w])
    assert float(loss.detach()) == pytest.approx(alpha * 2.0 + (1 - alpha) * 5.0, abs=1e-6)  # ||w - g|| = 5
    loss.backward()
    assert float(class_loss.grad) == pytest.approx(alpha)
    expected = (1 - alpha) * torch.tensor([3.0, 4.0, 0.0]) / 5.0  # d||w - g|| / dw = (w - g) / ||w - g||
    assert torch.allclose(w.grad, expected, atol=1e-6)


def test_constrain_and_scale_attack_passes_its_alpha_to_training():
    ctx = AttackContext(layout=ParamLayout.from_module(build_model("small_cnn")))
    attack = build_attack("constrain_and_scale", {"alpha": 0.25, "distance": "cosine", "scale": False}, ctx)
    hook = attack.hooks(0, 0, None)
    assert isinstance(hook, ConstrainHook) and hook.alpha == 0.25
    w, g = torch.tensor([1.0, 0.0], requires_grad=True), torch.tensor([0.0, 1.0])
    hook.begin([w], [g])
    assert float(hook.loss(torch.tensor(4.0), [w]).detach()) == pytest.approx(0.25 * 4.0 + 0.75 * 1.0)  # cos = 0


def test_neurotoxin_leaves_masked_coordinates_unchanged():
    t, g = _trainer()
    x, y = _data()
    change = torch.randn(g.shape, generator=torch.Generator().manual_seed(3))
    frozen = topk_mask(change, 10.0, t.layout)
    trainable = t.layout.trainable_mask()
    assert int(frozen.sum()) == round(0.1 * int(trainable.sum()))
    assert float(change.abs()[frozen].min()) >= float(change.abs()[trainable & ~frozen].max())
    upd = t.train(g, x, y, SETTINGS, torch.Generator().manual_seed(0), None, NeurotoxinHook(frozen, t.layout))
    assert torch.equal(upd[frozen], torch.zeros(int(frozen.sum())))  # momentum and weight decay included
    assert float(upd[trainable & ~frozen].abs().gt(0).float().mean()) > 0.9


# --------------------------------------------------------------------------------- data poisoning


def test_label_flipping_maps_every_label():
    y = torch.arange(10).repeat(3)
    assert torch.equal(flip_labels(y, 10), 9 - y)
    a = build_attack("label_flip", {}, AttackContext(num_classes=10))
    x = torch.rand(30, 1, 28, 28)
    plan = a.plan(0, 0, x, y, _state(ParamLayout.from_module(build_model("small_cnn"))))
    assert torch.equal(plan.y, 9 - y) and plan.poisoner is None and plan.hooks is None


def test_blended_trigger_formula_and_seeded_pattern():
    p = blend_pattern("noise", 1, 28, 28, seed=5)
    assert torch.equal(p, blend_pattern("noise", 1, 28, 28, seed=5)) and not torch.equal(p, blend_pattern("noise", 1, 28, 28, seed=6))
    x = torch.rand(4, 1, 28, 28)
    out = BlendTrigger(p, 0.2).apply(x)
    assert torch.allclose(out, 0.8 * x + 0.2 * p) and not torch.equal(out, x)
    a = build_attack("blended", {"alpha": 0.3, "pattern_seed": 5}, AttackContext(target_label=2, poison_per_batch=3))
    y = torch.tensor([0, 1, 2, 3])
    px, py = a.plan(0, 0, x, y, _state(ParamLayout.from_module(build_model("small_cnn")))).poisoner(x, y)
    assert torch.allclose(px[:3], 0.7 * x[:3] + 0.3 * p) and torch.equal(px[3], x[3]) and py.tolist() == [2, 2, 2, 3]
    bx, by = a.backdoor_test_set(x, y)
    assert len(bx) == 3 and by.eq(2).all()


def test_model_alignment_draws_pdr_in_range_per_round():
    layout = ParamLayout.from_module(build_model("small_cnn"))
    a = build_attack("alignment", {}, AttackContext(trigger=None))
    from fedshield.core.seeding import torch_stream

    draws = []
    for r in range(1, 21):
        st = _state(layout, round_=r, stream=lambda purpose, cid, r=r: torch_stream(0, "attack", purpose, r, cid))
        for cid in (0, 1):
            pdr = a.pdr(cid, st)
            assert 0.05 <= pdr <= 0.20
            assert pdr == a.pdr(cid, st)  # reproducible
            draws.append(pdr)
    assert len(set(draws)) == len(draws) and max(draws) - min(draws) > 0.08
    from fedshield.attacks import named_trigger

    xb, yb = BatchPoisoner(named_trigger("square"), 2, 20, fraction=0.125)(torch.zeros(64, 1, 28, 28), torch.zeros(64, dtype=torch.long))
    assert int(yb.eq(2).sum()) == 8


# -------------------------------------------------------------------------------------------- Fang


def test_fang_crafted_update_is_selected_by_krum():
    g = torch.Generator().manual_seed(0)
    d, m_benign, c = 50, 7, 3
    benign = 0.05 + 0.3 * torch.randn(m_benign, d, generator=g)  # noise-dominated, like SGD updates
    pos = [1, 4, 8]
    crafted, lam, chosen = craft_fang_krum(benign, pos, torch.Generator().manual_seed(1))
    assert chosen and 0 < lam <= fang_lambda_max(benign, c)
    s = torch.sign(benign.mean(0))
    assert torch.allclose(crafted[0], -lam * s)
    assert all(float((w - crafted[0]).norm()) <= 0.01 + 1e-9 for w in crafted[1:])
    full = torch.empty(10, d)
    full[[i for i in range(10) if i not in pos]] = benign
    full[pos] = torch.stack(crafted)
    assert krum_select(full, c) in pos
    # the registered Krum defense, when present, agrees
    from fedshield.defenses import available_defenses

    if "krum" in available_defenses():
        layout = ParamLayout.from_module(torch.nn.Linear(d, 1, bias=False))
        a = build_attack("fang_krum", {}, AttackContext())
        state = RoundState(round=1, global_params=torch.zeros(d), previous_global=None, selected=list(range(10)),
                           attackers=pos, layout=layout, seed=0)
        out = a.craft(benign, state)
        assert a.last["selected"] and len(out) == 3


# ------------------------------------------------------------------------------ registry, validation


def test_registry_names_and_cli_listing(capsys):
    names = set(available_attacks())
    assert {"none", "pixel", "dba", "blended", "semantic", "edge_case", "label_flip", "model_replacement",
            "train_and_scale", "boosting", "constrain_and_scale", "pgd", "neurotoxin", "noise", "alignment",
            "multi_backdoor", "fang_krum"} <= names
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "neurotoxin" in out and "ICML 2022" in out and "paper:" in out


def test_attack_parameters_are_validated_by_name():
    with pytest.raises(ParameterError, match="eps=-1 is invalid"):
        validate_attack_params("pgd", {"eps": -1})
    with pytest.raises(ParameterError, match="norm_bound"):
        validate_attack_params("train_and_scale", {})
    with pytest.raises(ParameterError, match="unknown parameter 'alhpa'"):
        validate_attack_params("blended", {"alhpa": 0.1})
    with pytest.raises(ParameterError, match="alpha=1.5"):
        validate_attack_params("pgd", {"data": "blended", "data_params": {"alpha": 1.5}})
    with pytest.raises(ParameterError, match="pdr_min"):
        validate_attack_params("alignment", {"pdr_min": 0.3, "pdr_max": 0.2})
    with pytest.raises(ConfigError, match=r"attack.*sigma=-0.1 is invalid"):
        config_from_dict({"attack": {"name": "noise", "params": {"sigma": -0.1}}})
    with pytest.raises(ConfigError, match=r"attack.name.*unknown attack 'bogus'; available: .*'neurotoxin'"):
        config_from_dict({"attack": {"name": "bogus"}})
    with pytest.raises(ConfigError, match="groups"):
        config_from_dict({"attack": {"name": "multi_backdoor", "params": {"groups": [{"pattern": "square"}]}}})
    cfg = config_from_dict({"attack": {"name": "pgd", "params": {"data": "edge_case", "eps": 1}}})
    assert cfg.attack.params == {"data": "edge_case", "eps": 1}


def test_edge_case_uses_its_own_test_set_and_owns_its_training_images():
    cfg = config_from_dict({
        "seed": 0, "model": "small_cnn", "num_clients": 6, "clients_per_round": 3, "rounds": 1, "workers": 1,
        "data": {"dataset": "synthetic"}, "train": {"epochs": 1, "batch_size": 32},
        "attack": {"name": "edge_case", "num_attackers": 1, "target_label": 2,
                   "params": {"source_class": 5, "fraction": 0.2}},
    })
    s = build_setup(cfg)
    owned = s.attack.owned_train_indices()
    assert len(owned) > 0 and s.dataset.train_y[owned].eq(5).all()
    for cid, part in enumerate(s.client_indices):
        if cid != 0:
            assert not set(part.tolist()) & set(owned.tolist())
    bx, by = s.evaluator.bd_x, s.evaluator.bd_y
    assert by.eq(2).all() and len(bx) == len(s.attack.data.test_images)
    # the held-out images of the sub-population: class 5 test images at or below the training threshold
    from fedshield.attacks.poisoning import mean_intensity

    assert float(mean_intensity(bx).max()) <= s.attack.data.threshold + 1e-6
    # attackers swap pool images into each batch
    plan = s.attack.plan(0, 0, *s.client_data(0), _state(s.layout))
    px, py = plan.poisoner(*[t[:32] for t in s.client_data(0)])
    assert py[: cfg.attack.poison_per_batch].eq(2).all()


def test_omniscient_seam_trains_benign_clients_only_and_neurotoxin_keeps_the_previous_global():
    base = {
        "seed": 2, "model": "small_cnn", "num_clients": 6, "clients_per_round": 5, "rounds": 2, "workers": 1,
        "data": {"dataset": "synthetic", "train_subset": 240}, "train": {"lr": 0.05, "epochs": 1, "batch_size": 20},
        "eval": {"test_subset": 50}, "defense": {"name": "fedavg"},
    }
    fang = build_setup(config_from_dict({**base, "attack": {"name": "fang_krum", "num_attackers": 1}}))
    plain = build_setup(config_from_dict({**base, "attack": {"name": "none"}}))
    sel = [0, 1, 2, 3, 4]
    uf, mf, _ = train_clients(fang, fang.initial_params, sel, 1)
    up, mp, _ = train_clients(plain, plain.initial_params, sel, 1)
    assert mf == [True, False, False, False, False] and mp == [False] * 5
    assert all(torch.equal(a, b) for a, b in zip(uf[1:], up[1:]))  # benign clients train exactly as without attack
    s = torch.sign(torch.stack(uf[1:]).mean(0))
    assert torch.allclose(uf[0], -fang.attack.last["lambda"] * s)  # w1 = G - lambda s
    neuro = build_setup(config_from_dict({**base, "attack": {"name": "neurotoxin", "num_attackers": 1}}))
    g2 = neuro.initial_params + 0.01 * torch.randn(neuro.layout.dim, generator=torch.Generator().manual_seed(0))
    u2, _, _ = train_clients(neuro, g2, sel, 2, previous_global=neuro.initial_params)
    frozen = topk_mask(g2 - neuro.initial_params, 10.0, neuro.layout)
    assert torch.equal(u2[0][frozen], torch.zeros(int(frozen.sum())))  # the attacker's masked coordinates
    assert bool(u2[1][frozen].ne(0).any())  # a benign client is not masked


@pytest.mark.parametrize("n, fixed, proportional", [(64, 20, 20), (21, 20, 6), (6, 6, 1), (35, 20, 10), (3, 3, 0)])
def test_poison_count_of_a_short_batch(n, fixed, proportional):
    """The last batch of an epoch: ``fixed`` stamps min(20, n) (DBA's code), ``proportional`` ⌊20·n/64⌋ (the
    Fedward authors' int(0.3125·n)): 21 → 6 (6.5625), 6 → 1 (1.875), 35 → 10 (10.9375)."""
    from fedshield.attacks import SubstitutePoisoner, named_trigger

    x, y = torch.zeros(n, 1, 28, 28), torch.zeros(n, dtype=torch.long)
    for full, k in ((None, fixed), (64, proportional)):
        xb, yb = BatchPoisoner(named_trigger("dba"), 2, 20, full_batch=full)(x, y)
        assert int((yb == 2).sum()) == k and int((xb.flatten(1).amax(1) > 0).sum()) == k
        sub = SubstitutePoisoner(torch.ones(4, 1, 28, 28), 2, 20, torch.Generator().manual_seed(0), full_batch=full)
        assert int((sub(x, y)[1] == 2).sum()) == k
    assert int((BatchPoisoner(named_trigger("dba"), 2, 20, fraction=0.5, full_batch=64)(x, y)[1] == 2).sum()) == \
        int(round(0.5 * n))  # model alignment's fraction still decides when given
    with pytest.raises(ValueError, match="at most the attackers' batch size 64"):
        BatchPoisoner(named_trigger("dba"), 2, 65, full_batch=64)
