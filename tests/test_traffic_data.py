"""Traffic preprocessing (fitted on the training split), its disk cache, the synthetic generator, the partitions."""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("pyarrow", reason="the traffic readers need pyarrow (pip install 'fedshield[traffic]')")

from fedshield.data import load_dataset, partition  # noqa: E402
from fedshield.data.partition import attack_free, by_device  # noqa: E402
from fedshield.data.traffic import (  # noqa: E402
    RawTraffic,
    TrafficOptions,
    load_prepared,
    make_synthetic_traffic,
    preprocess,
    replace_nonfinite,
    split_rows,
)
from fedshield.data.traffic import loader, unsw_nb15  # noqa: E402


def _raw(numeric, family, is_test=None, categorical=None, device=None):
    numeric = np.asarray(numeric, dtype=np.float64)
    return RawTraffic("t", numeric, tuple(f"f{j}" for j in range(numeric.shape[1])), categorical or {},
                      np.asarray(family, dtype=object), device=device,
                      is_test=None if is_test is None else np.asarray(is_test))


def test_nonfinite_rule_uses_training_statistics():
    train = np.array([[1.0, np.nan], [np.inf, 2.0], [3.0, 4.0], [-np.inf, 10.0]])
    test = np.array([[np.inf, np.nan], [-np.inf, 5.0]])
    tr, te, counts = replace_nonfinite(train, test, ("a", "b"))
    assert tr[:, 0].tolist() == [1.0, 3.0, 3.0, 1.0]  # +inf -> max finite (3), -inf -> min finite (1)
    assert tr[0, 1] == 4.0 and te[0, 1] == 4.0  # NaN -> training median of (2, 4, 10)
    assert te[:, 0].tolist() == [3.0, 1.0]
    assert counts == {"a": {"posinf": 2, "neginf": 2, "nan": 0}, "b": {"posinf": 0, "neginf": 0, "nan": 2}}


def test_scaling_and_one_hot_are_fitted_on_the_training_split_only():
    raw = _raw([[0.0], [2.0], [4.0], [100.0]], ["benign", "dos", "benign", "dos"], is_test=[0, 0, 0, 1],
               categorical={"proto": np.array(["tcp", "udp", "tcp", "icmp"], dtype=object)})
    p = preprocess(raw, TrafficOptions(log1p=False, scaling="standard"))
    std = np.std([0.0, 2.0, 4.0])
    np.testing.assert_allclose(p.train_x[:, 0], (np.array([0, 2, 4]) - 2.0) / std, rtol=1e-6)
    np.testing.assert_allclose(p.test_x[:, 0], [(100.0 - 2.0) / std], rtol=1e-6)
    assert p.feature_names == ("f0", "proto=tcp", "proto=udp")  # by training frequency; icmp unseen
    assert p.test_x[0, 1:].tolist() == [0.0, 0.0]
    assert p.train_y.tolist() == [0, 1, 0] and p.test_y.tolist() == [1]
    mm = preprocess(raw, TrafficOptions(log1p=True, scaling="minmax", label="multiclass"))
    np.testing.assert_allclose(mm.train_x[:, 0], np.log1p([0, 2, 4]) / np.log1p(4), rtol=1e-6)
    assert mm.family_names == ("benign", "dos") and mm.train_y.tolist() == [0, 1, 0]


def test_split_is_stratified_by_family_and_device_and_seeded():
    fam = ["benign"] * 50 + ["scan"] * 10
    raw = _raw(np.zeros((60, 1)), fam, device=np.array([0, 1] * 30))
    t = split_rows(raw, 0.2, seed=3)
    assert t[:50].sum() == 10 and t[50:].sum() == 2
    assert (t == split_rows(raw, 0.2, seed=3)).all() and not (t == split_rows(raw, 0.2, seed=4)).all()


def test_ports_dropped_when_asked():
    raw = _raw([[80.0, 1.0], [443.0, 2.0]], ["benign", "x"], is_test=[0, 1])
    raw.port_columns = ("f0",)
    assert preprocess(raw, TrafficOptions()).feature_names == ("f1",)
    assert preprocess(raw, TrafficOptions(drop_ports=False)).feature_names == ("f0", "f1")


def test_disk_cache_is_reused_and_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSHIELD_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "unsw"
    root.mkdir()
    for name, is_test in (("UNSW_NB15_training-set.csv", False), ("UNSW_NB15_testing-set.csv", True)):
        rows = [",".join(["1", "0.5", "tcp", "-", "FIN"] + ["1"] * 38 + [c, str(int(c != "Normal"))])
                for c in ("Normal", "DoS", "Normal")]
        (root / name).write_text(",".join(unsw_nb15.COLUMNS) + "\n" + "\n".join(rows) + "\n")
    calls = []
    real = loader._READERS["unsw_nb15"]
    monkeypatch.setitem(loader._READERS, "unsw_nb15", lambda r: calls.append(r) or real(r))
    first = load_prepared("unsw_nb15", root, TrafficOptions())
    second = load_prepared("unsw_nb15", root, TrafficOptions())
    assert len(calls) == 1 and np.array_equal(first.train_x, second.train_x)
    assert second.family_names == ("benign", "dos") and second.report["train_rows"] == 3
    load_prepared("unsw_nb15", root, TrafficOptions(scaling="minmax"))  # other options: another entry
    assert len(calls) == 2
    path = root / "UNSW_NB15_testing-set.csv"
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    os.utime(path, ns=(1, 10**18))
    assert load_prepared("unsw_nb15", root, TrafficOptions()).report["test_rows"] == 4 and len(calls) == 3
    assert not list((tmp_path / "cache" / "traffic").glob(".*.tmp"))  # written atomically, nothing left over
    for entry in (tmp_path / "cache" / "traffic").glob("*.npz"):
        entry.write_bytes(b"PK\x03\x04 truncated")  # a damaged cache file: a warning naming it, then a re-parse
    with pytest.warns(UserWarning, match=r"unsw_nb15-.*\.npz: damaged traffic cache file.*re-parsing"):
        rebuilt = load_prepared("unsw_nb15", root, TrafficOptions())
    assert len(calls) == 4 and rebuilt.report["test_rows"] == 4
    assert load_prepared("unsw_nb15", root, TrafficOptions()).report["test_rows"] == 4 and len(calls) == 4  # rewritten


def test_synthetic_traffic_is_deterministic_and_has_distinct_families():
    a = make_synthetic_traffic(num_devices=3, flows_per_device=400, seed=1)
    b = make_synthetic_traffic(num_devices=3, flows_per_device=400, seed=1)
    c = make_synthetic_traffic(num_devices=3, flows_per_device=400, seed=2)
    assert np.array_equal(a.numeric, b.numeric, equal_nan=True) and (a.family == b.family).all()
    assert not np.array_equal(a.numeric, c.numeric, equal_nan=True)
    assert set(a.family) == {"benign", "scan", "dos_flood", "bruteforce", "botnet_c2", "exfiltration"}
    assert np.isposinf(a.numeric[:, a.numeric_names.index("rate")]).any()  # zero-duration flows
    ports = a.numeric[:, a.numeric_names.index("dst_ports")]
    assert np.median(ports[a.family == "scan"]) > 5 * np.median(ports[a.family == "benign"])


def test_load_dataset_synthetic_traffic():
    ds = load_dataset("synthetic_traffic", synthetic={"num_devices": 4, "flows_per_device": 300})
    assert ds.kind == "traffic" and ds.num_classes == 2 and ds.train_x.dim() == 2
    assert ds.traffic.family_names[0] == "benign" and ds.traffic.train_device.max() == 3
    assert torch.equal(ds.train_y, (ds.traffic.train_family > 0).long())
    assert abs(float(ds.train_x[:, 0].mean())) < 1e-4  # standardised on the training split


def test_by_device_gives_each_client_one_device():
    devices = torch.tensor([0, 1, 2] * 10)
    parts = by_device(devices, 6, seed=0)
    assert sorted(torch.cat(parts).tolist()) == list(range(30))
    for k, p in enumerate(parts):
        assert set(devices[p].tolist()) == {k % 3} and len(p) == 5
    with pytest.raises(ValueError, match="num_clients=2 is invalid; by_device needs at least one client per device"):
        by_device(devices, 2, seed=0)
    via = partition(torch.zeros(30, dtype=torch.long), 6, "by_device", 0, devices=devices)
    assert [p.tolist() for p in via] == [p.tolist() for p in parts]


def test_attack_free_clients_hold_only_benign_flows():
    labels = torch.tensor([0] * 900 + [1] * 100)
    parts = attack_free(labels, 10, share=0.8, seed=0)
    with_attacks = [k for k, p in enumerate(parts) if bool((labels[p] == 1).any())]
    assert len(with_attacks) == 2
    assert sum(len(p) for p in parts) == 1000
    assert all(len(p) > 50 for p in parts)  # benign flows go to everyone
    with pytest.raises(ValueError, match="share=1.0 is invalid"):
        attack_free(labels, 10, share=1.0, seed=0)
