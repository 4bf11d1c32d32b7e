"""Private FLAME: the 2PC round in two server processes against its plaintext twin (flame, clustering=dbscan)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from fedshield.defenses import ParameterError, build_defense
from fedshield.defenses.flame import FLAME, cosine_distances, dbscan_binary_search, largest_cluster
from fedshield.defenses.private_flame import PrivateFLAME
from fedshield.models import LayoutEntry, ParamLayout
from fedshield.sim.checkpoint import defense_state, load_model_file, restore_defense_state, save_model_file
from proctools import pid_alive
from roundinput import make_input

os.environ.setdefault("OMP_NUM_THREADS", "1")


def synthetic_round(rng: np.random.Generator, n: int, n_att: int, d: int):
    """Benign updates around one direction, attackers around an orthogonal one (some scaled up)."""
    base = rng.normal(size=d)
    other = rng.normal(size=d)
    other -= (other @ base) / (base @ base) * base
    spread = rng.uniform(0.2, 0.5)
    ben = base + spread * rng.normal(size=(n - n_att, d))
    att = rng.uniform(1.0, 4.0) * other + spread * rng.normal(size=(n_att, d))
    u = np.concatenate([att, ben]) * rng.uniform(0.02, 0.2)
    return u * rng.uniform(0.5, 3.0, size=(n, 1))  # norms differ, so clipping matters


# ----------------------------------------------------------------------------------- the plaintext rule


def test_dbscan_binary_search_known_answer():
    x = np.array([0.0, 0.1, 0.2, 1.0, 1.05])
    dist = np.abs(x[:, None] - x[None, :])
    mask, eps, info = dbscan_binary_search(dist, min_pts=3, steps=4)
    # grid 2/16: at eps = 0.125 client 1 has {0, 1, 2} within eps (3 = min_pts); at eps = 0 nobody does
    assert eps == pytest.approx(0.125)
    assert mask.tolist() == [True, True, True, False, False]  # core 1 plus its border points 0 and 2
    assert info["num_core"] == 1.0


def test_dbscan_binary_search_tie_goes_to_smallest_index():
    x = np.array([3.0, 1.0, 1.05, 0.0, 0.05])
    dist = np.abs(x[:, None] - x[None, :])
    mask, eps, info = dbscan_binary_search(dist, min_pts=2, steps=5)
    assert eps == pytest.approx(0.0625)  # the first grid point >= 0.05
    assert mask.tolist() == [False, True, True, False, False]  # two clusters of 2: the one holding client 1
    assert info["num_clusters"] == 2.0


def test_dbscan_binary_search_agrees_with_sklearn_when_clusters_are_disjoint():
    rng = np.random.default_rng(3)
    for _ in range(10):
        u = synthetic_round(rng, 11, 3, 20)
        dist = cosine_distances(torch.tensor(u)).numpy()
        mask, eps, _ = dbscan_binary_search(dist, 11 // 2 + 1, 20)
        labels = DBSCAN(eps=eps, min_samples=11 // 2 + 1, metric="precomputed").fit_predict(dist)
        ref, _ = largest_cluster(labels)
        assert mask.tolist() == ref.tolist()


def test_flame_dbscan_rejects_attackers():
    rng = np.random.default_rng(0)
    u = synthetic_round(rng, 10, 3, 50)
    agg = FLAME(clustering="dbscan", cluster_on="updates", noise=False).aggregate(make_input(u))
    assert not bool(agg.accepted[:3].any())  # the attackers
    assert int(agg.accepted.sum()) >= 10 // 2 + 1  # at least one core point's min_pts neighbourhood
    assert agg.info["dbscan_eps"] > 0


def test_flame_clustering_parameter():
    assert FLAME(clustering="dbscan").clustering == "dbscan"
    with pytest.raises(ParameterError, match="clustering"):
        FLAME(clustering="kmeans")
    with pytest.raises(ParameterError, match="search_steps"):
        FLAME(clustering="dbscan", search_steps=40)


# ----------------------------------------------------------------------------------- 2PC against the twin


def test_private_flame_matches_plaintext_dbscan_on_20_rounds():
    """Done-when 1: same admitted clients, models within the fixed-point error (noise off)."""
    rng = np.random.default_rng(12)
    steps = 12
    configs = [("updates", 10, 3), ("models", 11, 4), ("updates", 12, 5), ("models", 13, 2)]
    with PrivateFLAME(noise=False, search_steps=steps, timeout_s=60) as private:
        for rnd in range(20):
            cluster_on, n, n_att = configs[rnd % len(configs)]
            d_w, d_b = 48, 6 if rnd % 2 else 0  # half the rounds carry BN buffers (mean of admitted, no clip)
            d = d_w + d_b
            u = synthetic_round(rng, n, n_att, d)
            g = rng.normal(size=d) * 0.3
            entries = [LayoutEntry("w", (d_w,), 0, d_w, "weight")]
            if d_b:
                entries.append(LayoutEntry("bn.running_mean", (d_b,), d_w, d_b, "buffer"))
            layout = ParamLayout(tuple(entries))
            inp = make_input(u, g=g, layout=layout, seed=rnd, rnd=rnd + 1)
            twin = FLAME(clustering="dbscan", cluster_on=cluster_on, noise=False, search_steps=steps).aggregate(inp)
            private.cluster_on = cluster_on
            got = private.aggregate(inp)
            assert got.accepted.tolist() == twin.accepted.tolist(), f"round {rnd}"
            assert not bool(got.accepted[:n_att].any())  # every attacker rejected
            err = (got.global_params.double() - twin.global_params.double()).abs().max().item()
            assert err < 2.0 ** -15, f"round {rnd}: model differs by {err}"


def test_private_flame_noise_has_std_lambda_times_median():
    rng = np.random.default_rng(5)
    n, d = 10, 20000
    u = synthetic_round(rng, n, 3, d)
    inp = make_input(u, seed=1)
    lam = 0.01
    with PrivateFLAME(cluster_on="updates", lam=lam, search_steps=8, timeout_s=60) as private:
        noisy = private.aggregate(inp).global_params.double()
        private.noise = False
        clean = private.aggregate(inp).global_params.double()
    s_t = float(np.median(np.linalg.norm(u, axis=1)))
    noise = (noisy - clean).numpy()
    assert abs(noise.std() / (lam * s_t) - 1) < 0.05
    assert abs(noise.mean()) < 4 * lam * s_t / np.sqrt(d)


def test_registered_and_validated():
    assert isinstance(build_defense("private_flame", {"lam": 0.002}), PrivateFLAME)
    for kwargs, name in [({"clustering": "hdbscan"}, "clustering"), ({"frac_bits": 30}, "frac_bits"),
                         ({"lam": -1}, "lam"), ({"timeout_s": 0}, "timeout_s"), ({"search_steps": 0}, "search_steps"),
                         ({"servers": {"A": "nohost"}}, "servers"), ({"cluster_on": "both"}, "cluster_on")]:
        with pytest.raises(ParameterError, match=name):
            PrivateFLAME(**kwargs)


def test_pickles_without_processes():
    rng = np.random.default_rng(1)
    inp = make_input(synthetic_round(rng, 6, 2, 16))
    with PrivateFLAME(search_steps=6, timeout_s=60) as private:
        private.aggregate(inp)
        pids = list(private.server_pair.pids.values())
        clone = pickle.loads(pickle.dumps(private))
        assert clone._pair is None and clone.lam == private.lam
    assert not any(pid_alive(p) for p in pids)


def test_checkpoint_holds_parameters_and_resume_restarts_the_servers(tmp_path):
    """The checkpoint stores the defense as plain data (weights_only); a resumed defense starts new servers and
    gives the round the running one gives."""
    u = synthetic_round(np.random.default_rng(3), 6, 2, 16)
    with PrivateFLAME(search_steps=6, lam=0.01, cluster_on="updates", timeout_s=60) as private:
        private.aggregate(make_input(u, seed=1))
        state = defense_state(private)
        save_model_file({"global_params": torch.zeros(16), "defense_state": state}, tmp_path / "ckpt.pt")
        expected = private.aggregate(make_input(u, seed=2))
    assert "_pair" not in state and state["lam"] == 0.01 and state["cluster_on"] == "updates"
    with PrivateFLAME(search_steps=6, timeout_s=60) as resumed:
        restore_defense_state(resumed, load_model_file(tmp_path / "ckpt.pt")["defense_state"], tmp_path / "ckpt.pt")
        assert resumed.lam == 0.01 and resumed.cluster_on == "updates" and resumed._pair is None
        again = resumed.aggregate(make_input(u, seed=2))
        assert resumed._pair is not None
    assert torch.equal(again.global_params, expected.global_params)
    assert torch.equal(again.accepted, expected.accepted) and not bool(again.accepted[:2].any())


def test_same_seed_same_model_unless_noise_from_os():
    rng = np.random.default_rng(2)
    u = synthetic_round(rng, 6, 2, 300)
    with PrivateFLAME(search_steps=6, lam=0.01, timeout_s=60) as private:
        first = private.aggregate(make_input(u, seed=4)).global_params
        second = private.aggregate(make_input(u, seed=4)).global_params
        private.noise_entropy = "os"
        third = private.aggregate(make_input(u, seed=4)).global_params
    assert torch.equal(first, second)  # every stream keyed by the round's generator
    assert not torch.equal(first, third)  # each server drew its own noise from OS entropy
    with pytest.raises(ParameterError, match="noise_entropy"):
        PrivateFLAME(noise_entropy="urandom")
