"""The Ray engine: a small sweep run as Ray tasks on a local Ray instance gives the local pool's summaries."""

import json
import math
from pathlib import Path

import pytest
import yaml

from fedshield.cli import build_parser
from fedshield.config import ConfigError
from fedshield.report import summarize_sweep
from fedshield.sweep import Engine, load_sweep, run_sweep

ray = pytest.importorskip("ray", reason="Ray is not installed (pip extra 'ray')")

BASE = {
    "model": "small_cnn",
    "num_clients": 4,
    "clients_per_round": 3,
    "rounds": 2,
    "workers": 1,
    "data": {"dataset": "synthetic"},
    "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
    "attack": {"name": "dba", "num_attackers": 1, "start_round": 1, "train": {"lr": 0.05, "epochs": 1}},
    "eval": {"every": 1},
}
TIMING = {"seconds", "train_s", "aggregate_s", "eval_s"}


def _summaries(out: Path) -> dict[str, dict]:
    return {
        p.parent.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING}
        for p in sorted(out.glob("runs/*/summary.json"))
    }


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and isinstance(b[k], float) and math.isnan(b[k])) or a[k] == b[k]
        for k in a
    )


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    except Exception as exc:  # noqa: BLE001 - any failure to start means the test cannot run here
        pytest.skip(f"a local Ray instance could not start: {type(exc).__name__}: {exc}")
    yield ray
    ray.shutdown()


def test_ray_sweep_matches_local_pool_and_resumes(tmp_path, local_ray):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "tiny", "base": BASE, "grid": {"defense.name": ["fedavg", "flame"]}}))
    spec = load_sweep(grid)
    run_sweep(spec, tmp_path / "local", jobs=1, log=lambda m: None)
    logs: list[str] = []
    result = run_sweep(spec, tmp_path / "ray", log=logs.append, engine=Engine("ray", cpus_per_run=1))
    assert result["ran"] == 2 and not result["failed"]
    assert "2 at a time on Ray" in logs[0]
    local, viaray = _summaries(tmp_path / "local"), _summaries(tmp_path / "ray")
    assert sorted(local) == sorted(viaray) == ["name=fedavg", "name=flame"]
    for run_id in local:
        assert _same(local[run_id], viaray[run_id]), run_id
    summarize_sweep(tmp_path / "ray")  # the results path the CLI takes after any engine
    assert (tmp_path / "ray" / "summary.csv").read_text().count("\n") == 3
    # resumable: a finished point is never run again, a new point is
    spec.grid["defense.name"].append("median")
    again = run_sweep(spec, tmp_path / "ray", log=lambda m: None, engine=Engine("ray"))
    assert again["ran"] == 1 and sorted(_summaries(tmp_path / "ray")) == ["name=fedavg", "name=flame", "name=median"]


def test_ray_engine_checks_its_resources(tmp_path, local_ray):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "tiny", "base": BASE, "grid": {"defense.name": ["fedavg"]}}))
    with pytest.raises(ConfigError, match="asks for 1.0 CPUs and 1.0 GPUs, but the Ray cluster has 2 CPUs and 0 GPUs"):
        run_sweep(load_sweep(grid), tmp_path / "out", log=lambda m: None, engine=Engine("ray", gpus_per_run=1.0))


def test_ray_sweep_validates_every_grid_point_before_starting_ray(tmp_path):
    """The same check as the local pool's: every bad point listed, nothing run, Ray never started."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "tiny", "base": BASE,
                                    "grid": {"defense.name": ["fedavg", "no_such_defense", "also_missing"]}}))
    was_running = ray.is_initialized()
    with pytest.raises(ConfigError, match="2 of 3 grid points are invalid") as exc:
        run_sweep(load_sweep(grid), tmp_path / "out", log=lambda m: None, engine=Engine("ray"))
    assert "no_such_defense" in str(exc.value) and "also_missing" in str(exc.value)
    assert not (tmp_path / "out" / "runs").exists()
    assert ray.is_initialized() == was_running


def test_engine_parameters_are_checked():
    with pytest.raises(ConfigError, match="engine='spark' is invalid"):
        Engine("spark")
    with pytest.raises(ConfigError, match="cpus_per_run=0 is invalid"):
        Engine("ray", cpus_per_run=0)
    for bad in (float("nan"), -0.5):
        with pytest.raises(ConfigError, match="gpus_per_run="):
            Engine("ray", gpus_per_run=bad)
    with pytest.raises(ConfigError, match="jobs=True is invalid"):
        Engine("local", jobs=True)
    with pytest.raises(ConfigError, match="apply to engine 'ray' only"):
        Engine("local", address="127.0.0.1:6379")
    assert Engine("ray", gpus_per_run=0.25).worker_config({"device": "cpu"})["device"] == "cuda"
    assert Engine("local", jobs=2).worker_config({"workers": 2})["workers"] == 1


def test_cli_passes_the_engine_options():
    args = build_parser().parse_args(
        ["sweep", "g.yaml", "--engine", "ray", "--address", "10.0.0.1:6379", "--cpus-per-run", "2", "--gpus-per-run", "0.5"]
    )
    assert (args.engine, args.address, args.cpus_per_run, args.gpus_per_run) == ("ray", "10.0.0.1:6379", 2.0, 0.5)
    assert build_parser().parse_args(["sweep", "g.yaml"]).engine == "local"
