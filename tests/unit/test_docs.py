"""The docs cannot fall behind the code: every relative link in README.md and docs/ leads
to a file (and its #anchor to a heading), every subcommand and option of the command line
is in docs/reference/cli.md, every setting and hyperparameter in its reference page, and
the Layout of docs/architecture.md names every module and no module that is gone."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import build_parser
from services.config import Settings
from training.hyperparams import Hyperparameters

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str) -> Iterator[str]:
    """The lines of a page outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in _prose(page.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            found.add(slug(m[1]))
    return found


def _links(page: Path) -> Iterator[str]:
    for line in _prose(page.read_text(encoding="utf-8")):
        for m in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = m[1]
            if not re.match(r"^[a-z][a-z0-9+.\-]*:", target):  # http:, mailto:, ...
                yield target


def test_the_slug_is_githubs() -> None:
    assert slug("Under load: shedding, caching, scaling out") == (
        "under-load-shedding-caching-scaling-out"
    )
    assert slug("A model version's folder") == "a-model-versions-folder"
    assert slug("`tuning`") == "tuning"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def _commands(
    parser: argparse.ArgumentParser, prefix: str = "colecionador"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command the parser runs, nested ones too (``colecionador db upgrade``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, f"{prefix} {name}")


def _sections(page: Path) -> dict[str, str]:
    """``## Heading`` -> the text under it."""
    parts = re.split(r"^## (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_subcommand_and_option_is_in_the_cli_reference() -> None:
    sections = _sections(DOCS / "reference" / "cli.md")
    missing = []
    for command, parser in _commands(build_parser()):
        if command not in sections:
            missing.append(f"a section '## {command}'")
            continue
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = [o for o in action.option_strings if o.startswith("--")] or [
                str(action.metavar or action.dest)
            ]
            missing += [f"{command}: {n}" for n in names if f"`{n}`" not in sections[command]]
    assert not missing, f"docs/reference/cli.md lacks {missing}"


def test_every_setting_is_in_the_settings_reference() -> None:
    text = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    missing = [f"COLECIONADOR_{n.upper()}" for n in Settings.model_fields]
    missing = [n for n in missing if f"`{n}`" not in text]
    assert not missing, f"docs/reference/settings.md lacks {missing}"


def test_every_hyperparameter_is_in_its_reference() -> None:
    text = (DOCS / "reference" / "hyperparameters.md").read_text(encoding="utf-8")
    missing = [n for n in Hyperparameters.model_fields if f"| `{n}` |" not in text]
    assert not missing, f"docs/reference/hyperparameters.md lacks {missing}"


def _layout() -> dict[str, set[str]]:
    """The words of each top-level package's part of architecture.md's Layout block."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    words: dict[str, set[str]] = {}
    top = ""
    for line in block.splitlines():
        if line and not line.startswith(" "):
            top = line.split("/")[0]
        words.setdefault(top, set()).update(re.findall(r"[\w]+(?:\.py)?", line))
    return words


@pytest.mark.parametrize("package", ["training", "tuning", "services"])
def test_the_layout_names_every_module_and_only_modules_that_exist(package: str) -> None:
    words = _layout()[package]
    files = [
        p
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py" and "migrations" not in p.parts
    ]
    unnamed = sorted(
        str(p.relative_to(ROOT)) for p in files if p.name not in words and p.stem not in words
    )
    assert not unnamed, f"docs/architecture.md's Layout does not name {unnamed}"
    names = {p.name for p in files}
    gone = sorted(w for w in words if w.endswith(".py") and w not in names | {"__init__.py"})
    assert not gone, f"docs/architecture.md's Layout names modules that do not exist: {gone}"


REPO_PATH = re.compile(r"`((?:services|training|tuning|tests|benchmarks|deploy|docs)/[\w./\-]+)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_a_page_names_exists(page: Path) -> None:
    named = REPO_PATH.findall(page.read_text(encoding="utf-8"))
    gone = sorted({p for p in named if not (ROOT / p.rstrip("/")).exists()})
    assert not gone, f"{page.relative_to(ROOT)} names paths that do not exist: {gone}"
