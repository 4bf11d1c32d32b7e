"""The repository cites only itself: no research notes outside it, and every "docs/<file>.md, <id>" citation names
a heading that exists; every registered defense has its section in docs/defenses.md."""

from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from fedshield.defenses import available_defenses

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("src", "tests", "benchmarks", "configs", "docs", "examples", "scripts")
SCANNED_TOP = ("README.md", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".csv", ".json", ".sh", ".cfg", ".ini", ""}

# Documents written on other branches of the same change (the architecture and the secure FLAME). A citation of
# one of them is checked like any other once the file exists; until then it may be missing.
WRITTEN_ELSEWHERE = {"docs/architecture.md", "docs/private_flame.md"}

# Research notes kept outside the repository, and paths that reach outside it.
FORBIDDEN = [
    (re.compile(r"algorithms\.md"), "the research notes algorithms.md (cite docs/defenses.md)"),
    (re.compile(r"DESIGN\.md"), "DESIGN.md (cite docs/architecture.md)"),
    (re.compile(r"\.\./shared|\bshared/|(?<![\w-])reference/"), "the shared reference folder"),
    (re.compile(r"/work/"), "a path of the development machine"),
]

CITATION = re.compile(r"docs/([\w-]+\.md), ([A-Za-z][\w-]*(?:\.\d+)?)")
MD_MENTION = re.compile(r"(?<![\w/.-])((?:\.\.?/)*[\w./-]*?[\w-]+\.md)\b")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _ignored(paths: list[Path]) -> set[Path]:
    """The paths git ignores (build output such as ``*.egg-info``): not part of the repository."""
    try:
        out = subprocess.run(["git", "check-ignore", "--stdin"], cwd=ROOT, capture_output=True, text=True,
                             input="\n".join(_rel(p) for p in paths), timeout=30)
    except (OSError, subprocess.SubprocessError):
        return set()
    return {ROOT / line for line in out.stdout.splitlines() if line}


def _scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_TOP if (ROOT / name).is_file()]
    for d in SCANNED_DIRS:
        base = ROOT / d
        if base.is_dir():
            files += [p for p in base.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                      and "__pycache__" not in p.parts]
    ignored = _ignored(files)
    return sorted(p for p in files if p not in ignored)


@lru_cache(maxsize=None)
def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def heading_ids(doc: Path) -> dict[str, str]:
    """id → heading text for every ``##``/``###`` heading of ``doc``; the id is the heading's first word."""
    ids: dict[str, str] = {}
    in_code = False
    for line in _text(doc).splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"(#{2,3}) (\S+)(.*)$", line)
        if m and not in_code:
            ids.setdefault(m.group(2), m.group(2) + m.group(3))
    return ids


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _this_file(path: Path) -> bool:
    return path == Path(__file__).resolve()


def test_no_file_cites_notes_outside_the_repository():
    problems = []
    for path in _scanned_files():
        if _this_file(path):
            continue  # it names the forbidden patterns
        for no, line in enumerate(_text(path).splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{_rel(path)}:{no}: cites {what}: {line.strip()[:100]}")
    assert not problems, "\n".join(problems)


def _resolves(path: Path, target: str) -> bool:
    """A relative path named in ``path`` exists inside the repository, relative to the root or to the file."""
    for base in (ROOT, path.parent):
        cand = (base / target).resolve()
        if cand.is_relative_to(ROOT) and cand.exists():
            return True
        if _rel_or_none(cand) in WRITTEN_ELSEWHERE:
            return True
    return False


def _rel_or_none(p: Path) -> str | None:
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else None


def _repo_documents() -> set[str]:
    """File names of the repository's own documents (README.md, docs/*.md)."""
    return {p.name for p in (ROOT / "docs").glob("*.md")} | {"README.md"} | {Path(p).name for p in WRITTEN_ELSEWHERE}


def test_every_document_named_is_a_file_of_the_repository():
    """A ``*.md`` named with a path, or linked from markdown, exists in the repository; a document of the
    repository named without its path (``performance.md`` in a code comment) must be cited with it."""
    problems = []
    own_docs = _repo_documents()
    for path in _scanned_files():
        if _this_file(path):
            continue
        text = _text(path)
        is_md = path.suffix == ".md"
        links = {t.split("#")[0] for t in MD_LINK.findall(text)
                 if not re.match(r"[a-z]+:", t) and not t.startswith("#")} if is_md else set()
        for name in sorted(set(MD_MENTION.findall(text)) | links):
            if "/" in name or name in links:
                if not _resolves(path, name):
                    problems.append(f"{_rel(path)}: names {name!r}, which is not a file of the repository")
            elif name in own_docs and name != "README.md" and not (is_md and path.parent == ROOT / "docs"):
                problems.append(f"{_rel(path)}: names {name!r} without its path; cite it as docs/{name}")
    assert not problems, "\n".join(problems)


def test_every_docs_citation_names_an_existing_section():
    problems = []
    count = 0
    for path in _scanned_files():
        if _this_file(path):
            continue
        for no, line in enumerate(_text(path).splitlines(), 1):
            for doc_name, ident in CITATION.findall(line):
                count += 1
                doc = ROOT / "docs" / doc_name
                if not doc.exists():
                    if f"docs/{doc_name}" not in WRITTEN_ELSEWHERE:
                        problems.append(f"{_rel(path)}:{no}: cites docs/{doc_name}, which does not exist")
                    continue
                if ident not in heading_ids(doc):
                    problems.append(f"{_rel(path)}:{no}: cites 'docs/{doc_name}, {ident}', but docs/{doc_name} "
                                    f"has no heading whose first word is {ident!r}")
    assert not problems, "\n".join(problems)
    assert count >= 50, f"only {count} section citations found; the code is expected to cite docs/defenses.md"


def test_every_source_module_of_a_defense_cites_docs_defenses():
    missing = [_rel(p) for p in sorted((ROOT / "src/fedshield/defenses").glob("*.py"))
               if p.name not in ("__init__.py", "base.py", "registry.py", "fedavg.py")
               and "docs/defenses.md" not in _text(p)]
    assert not missing, f"defense modules that do not cite docs/defenses.md: {missing}"


def test_anchor_links_inside_docs_resolve():
    problems = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        slugs = {github_slug(h) for h in heading_ids(doc).values()}
        slugs |= {github_slug(line.lstrip("#")) for line in _text(doc).splitlines() if line.startswith("# ")}
        for target in MD_LINK.findall(_text(doc)):
            if target.startswith("#") and target[1:] not in slugs:
                problems.append(f"{_rel(doc)}: link {target} matches no heading")
    assert not problems, "\n".join(problems)


def _defense_sections() -> dict[str, tuple[str, list[str]]]:
    """``## `` section id → (section text, names on its "Registered as:" line)."""
    sections: dict[str, tuple[str, list[str]]] = {}
    parts = re.split(r"(?m)^## ", _text(ROOT / "docs/defenses.md"))[1:]
    for part in parts:
        ident = part.split(None, 1)[0]
        m = re.search(r"(?m)^Registered as: (.+)$", part)
        names = re.findall(r"`([\w-]+)`", m.group(1)) if m else []
        sections[ident] = (part, names)
    return sections


def test_every_registered_defense_has_its_section():
    sections = _defense_sections()
    where: dict[str, str] = {}
    for ident, (_, names) in sections.items():
        for name in names:
            assert name not in where, f"defense {name!r} is listed under both {where[name]!r} and {ident!r}"
            where[name] = ident
    registered = available_defenses()
    assert set(where) == set(registered), (
        f"registered but without a section: {sorted(set(registered) - set(where))}; "
        f"sections naming unknown defenses: {sorted(set(where) - set(registered))}"
    )
    for name, cls in registered.items():
        module_path = "src/" + cls.__module__.replace(".", "/") + ".py"
        assert module_path in sections[where[name]][0], (
            f"section {where[name]!r} does not name {module_path} (defense {name!r})")


def test_post_training_flain_and_conventions_have_sections():
    ids = heading_ids(ROOT / "docs/defenses.md")
    for ident in ("Conventions", "FLAIN", "FLAIN.2", "FLAME.3", "Fedward.5"):
        assert ident in ids, f"docs/defenses.md lacks the section {ident!r}"
    assert "src/fedshield/defenses/flain.py" in _defense_sections()["FLAIN"][0]


@pytest.mark.parametrize("doc", ["defenses.md", "partitions.md", "performance.md", "attacks.md"])
def test_section_ids_are_unique(doc):
    seen: list[str] = []
    in_code = False
    for line in _text(ROOT / "docs" / doc).splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"#{2,3} (\S+)", line)
        if m and not in_code:
            seen.append(m.group(1))
    dup = sorted({s for s in seen if seen.count(s) > 1})
    assert not dup, f"docs/{doc}: heading ids used twice: {dup}"
