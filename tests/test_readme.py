"""The README's commands work as written.

Blocks preceded by ``<!-- test: run -->`` are executed: bash blocks by ``bash -e`` in a fresh environment (``PATH``
without the virtual environment, ``FEDSHIELD_QUICK=1`` as the README says, an empty ``HOME`` and cache) from a
temporary folder that links the repository's ``.venv``, ``configs`` and ``examples``; python blocks by the
interpreter. Every other ``fedshield …`` line in a bash block is parsed by the CLI's own parser and its
config files must exist, and every ``make`` target must be in the Makefile, so no README command drifts from
the code unnoticed.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fedshield.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- test: run -->\s*\n)?```(bash|python)\n(.*?)```", re.S)


def blocks():
    """(runnable?, language, text) of every bash/python block."""
    return [(bool(m.group(1)), m.group(2), m.group(3)) for m in BLOCK.finditer(README.read_text())]


def _command_lines(text):
    """Logical lines (backslash continuations joined), comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            yield line


def _fresh_env(home):
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # no .venv/bin: the README must not rely on it
        "HOME": str(home),
        "FEDSHIELD_QUICK": "1",
        "FEDSHIELD_CACHE": str(home / "cache"),
        "OMP_NUM_THREADS": "1",
        "LANG": "C.UTF-8",
    }
    for keep in ("PYTHONPATH", "FEDSHIELD_DATA", "TMPDIR"):  # a development checkout, a data folder
        if keep in os.environ:
            env[keep] = os.environ[keep]
    if "PYTHONPATH" not in env and ROOT != Path(sys.prefix).parent:
        env["PYTHONPATH"] = str(ROOT / "src")
    return env


def _workdir(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))  # the venv running the tests = the one `make test` built
    for name in ("configs", "examples"):
        (work / name).symlink_to(ROOT / name)
    return work


def test_the_readme_has_runnable_blocks():
    runnable = [(lang, text) for run, lang, text in blocks() if run]
    assert any("fedshield run" in t for _, t in runnable)
    assert any("fedshield federate" in t for _, t in runnable)
    assert any(lang == "python" for lang, _ in runnable)


@pytest.mark.parametrize("index", [i for i, (run, _, _) in enumerate(blocks()) if run])
def test_runnable_block(index, tmp_path):
    _, lang, text = blocks()[index]
    work = _workdir(tmp_path)
    env = _fresh_env(tmp_path / "home")
    cmd = ["bash", "-e", "-c", text] if lang == "bash" else [sys.executable, "-c", text]
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"README block {index} failed:\n{text}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]


def test_every_other_command_parses():
    parser = build_parser()
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    checked = 0
    for run, lang, text in blocks():
        if lang != "bash" or run:
            continue
        for line in _command_lines(text):
            args = shlex.split(line)
            if args[0].endswith("fedshield"):
                try:
                    ns = parser.parse_args(args[1:])
                except SystemExit:
                    pytest.fail(f"README command does not parse: {line}")
                for attr in ("config", "grid"):
                    path = getattr(ns, attr, None)
                    if path and path.endswith((".yaml", ".yml")):
                        assert (ROOT / path).is_file(), f"README command names a missing file: {line}"
                checked += 1
            elif args[0] == "make":
                assert set(args[1:]) <= targets, f"README names a make target the Makefile lacks: {line}"
                checked += 1
    assert checked >= 3
