"""The documentation site builds with no broken link, and every name it mentions exists."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link, anchor or API reference is an error."""
    pytest.importorskip("mkdocstrings")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").read_text().count("open_mouse") > 1


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError as e:
            missing = [m for m in ("torch", "matplotlib") if importlib.util.find_spec(m) is None]
            if any(m in str(e) for m in missing):  # needs an optional extra that is not installed here
                return True
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_converter_name_the_docs_mention_exists():
    names = {m for page in PAGES for m in re.findall(r"`(converter(?:\.[A-Za-z_]\w*)+)", page.read_text())}
    assert len(names) > 20
    former = {"converter.engine"}  # the upgrade note of 0.4 names the module that moved
    missing = sorted(n for n in names - former if not _resolves(n))
    assert not missing, missing


def test_every_file_the_docs_mention_exists():
    """Paths of the repository named in the docs (``converter/engine.py`` once outlived its file)."""
    paths = {m for page in PAGES for m in re.findall(r"`((?:converter|schemas|benchmarks|tests|docs)/[\w./-]+\.(?:py|json|md|png))`",
                                                      page.read_text())}
    missing = sorted(p for p in paths if not (ROOT / p).exists() and "<" not in p)
    assert not missing, missing


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_bytes()) <= 15_000
