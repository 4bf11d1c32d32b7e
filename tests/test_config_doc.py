"""docs/config.md cannot drift from the schema: every config key is documented with the schema's default, and
every documented key exists. Also: ``fedshield run --help`` points there, and FEDSHIELD_QUICK's limits."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from fedshield.cli import build_parser
from fedshield.config import ExperimentConfig, config_from_dict, quick_limits

DOC = Path(__file__).resolve().parents[1] / "docs/config.md"


def _submodel(annotation: Any):
    for cand in (*getattr(annotation, "__args__", ()), annotation):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def schema_keys(model=ExperimentConfig, prefix=""):
    """dotted key -> default (None for a section whose default is null), sections and leaves."""
    out = {}
    for name, field in model.model_fields.items():
        key = prefix + name
        default = field.get_default(call_default_factory=True)
        sub = _submodel(field.annotation)
        if sub is not None:
            if default is None:
                out[key] = None
            for k, v in schema_keys(sub, key + ".").items():
                out[k] = v
        else:
            out[key] = default
    return out


def doc_rows():
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`([a-z0-9_.*]+)`\s*\|\s*([^|]*?)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_schema_key_is_documented_with_its_default():
    rows = doc_rows()
    keys = schema_keys()
    for key, default in keys.items():
        wildcard = [k for k in rows if k.endswith(".*") and key.startswith(k[:-1])]
        assert key in rows or wildcard, f"docs/config.md lacks {key}"
        if key in rows:
            assert yaml.safe_load(rows[key]) == default, f"docs/config.md: {key} default {rows[key]!r}, schema {default!r}"


def test_every_documented_key_exists():
    keys = schema_keys()
    for key in doc_rows():
        if key.endswith(".*"):
            assert any(k.startswith(key[:-1]) for k in keys), key
        else:
            assert key in keys, f"docs/config.md documents {key}, which the schema does not have"


def test_run_help_names_the_config_reference(capsys):
    for cmd in ("run", "federate"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
        assert "docs/config.md" in capsys.readouterr().out


def test_quick_limits_shrink_and_are_idempotent(monkeypatch):
    data = {"rounds": 40, "attack": {"name": "dba", "start_round": 5}, "eval": {"test_subset": 2000}, "pretrain": {"rounds": 20}}
    q = quick_limits(data)
    assert q["rounds"] == 2 and q["attack"]["start_round"] == 2 and q["eval"]["test_subset"] == 500
    assert q["data"]["train_subset"] == 2000 and q["pretrain"]["rounds"] == 1
    assert quick_limits(q) == q and data["rounds"] == 40  # the input is not changed
    assert quick_limits({"rounds": 1, "eval": {"test_subset": 100}})["rounds"] == 1  # smaller values stay
    monkeypatch.setenv("FEDSHIELD_QUICK", "1")
    assert config_from_dict({"rounds": 9}).rounds == 2
    monkeypatch.setenv("FEDSHIELD_QUICK", "0")
    assert config_from_dict({"rounds": 9}).rounds == 9
