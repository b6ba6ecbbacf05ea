"""The documents: every relative link and image resolves inside the repository, README's own
anchors name its headings, README stays short, and the licence and citation files are there."""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 210
# [text](target) and ![alt](target); the target ends at the first space or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _documents() -> list[str]:
    paths = ["README.md", "BUILD.md", "CONTRIBUTING.md"]
    paths += sorted(
        os.path.relpath(p, ROOT)
        for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    )
    return paths


def _text_outside_code(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return FENCE.sub("", f.read())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: str) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _text_outside_code(path), re.M)
    return {_slug(h) for h in headings}


def _links(path: str) -> list[str]:
    return [t for t in LINK.findall(_text_outside_code(path)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("path", _documents())
def test_relative_links_resolve_inside_the_repository(path):
    folder = os.path.dirname(os.path.join(ROOT, path))
    bad = []
    for target in _links(path):
        file, _, anchor = target.partition("#")
        resolved = (
            os.path.normpath(os.path.join(folder, file)) if file else os.path.join(ROOT, path)
        )
        if os.path.commonpath([resolved, ROOT]) != ROOT:
            bad.append(f"{target}: outside the repository")
        elif not os.path.exists(resolved):
            bad.append(f"{target}: no such file")
        elif anchor and resolved.endswith(".md"):
            if anchor not in _anchors(os.path.relpath(resolved, ROOT)):
                bad.append(f"{target}: no heading with that anchor")
    assert not bad, f"{path}: broken links:\n" + "\n".join(bad)


def test_slugs_follow_github():
    assert _slug("Predict a face: `s2f predict`") == "predict-a-face-s2f-predict"
    assert _slug("Limitations and the model card") == "limitations-and-the-model-card"


def test_readme_is_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to BUILD.md "
        f"or docs/experiments/"
    )


def test_readme_reaches_install_predict_and_training_early():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        head = "\n".join(f.read().splitlines()[:80])
    for heading in ("## Install", "## Predict", "## Train on your own data"):
        assert heading in head, f"README.md: {heading!r} should start within the first 80 lines"


@pytest.mark.parametrize("name", ["LICENSE", "CITATION.cff", "CONTRIBUTING.md"])
def test_project_files_exist(name):
    assert os.path.isfile(os.path.join(ROOT, name)), f"{name} is missing"


def test_license_is_apache_2():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_citation_is_cff_1_2_0():
    with open(os.path.join(ROOT, "CITATION.cff"), encoding="utf-8") as f:
        cff = yaml.safe_load(f)
    assert cff["cff-version"] == "1.2.0"
    for key in ("cff-version", "message", "title", "authors"):  # the schema's required keys
        assert cff.get(key), f"CITATION.cff: {key} is missing"
    paper = cff["preferred-citation"]
    for key in ("type", "title", "authors"):
        assert paper.get(key), f"CITATION.cff preferred-citation: {key} is missing"
    assert paper["title"] == "Speech2Face: Learning the Face Behind a Voice"
    assert (paper["year"], paper["start"], paper["end"]) == (2019, 7539, 7548)
    assert all(a.get("family-names") or a.get("name") for a in cff["authors"] + paper["authors"])
