"""The project's documents stand alone: no link to design notes outside the repository."""

from __future__ import annotations

import re

from tests.support.paths import REPO

_OUTSIDE = re.compile(r"\.\./shared/|\b(?:DOMAIN|DESIGN)\.md\b")


def test_readme_architecture_and_deploy_files_name_no_document_outside_the_repository() -> None:
    documents = [REPO / "README.md", REPO / "ARCHITECTURE.md"]
    documents += [p for p in sorted((REPO / "deploy").rglob("*")) if p.is_file()]
    offending = [
        f"{path.relative_to(REPO)}:{n}"
        for path in documents
        if path.suffix in {".md", ".yaml", ".yml", ".json", ".conf", ""}
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert offending == [], "write what a reader needs into the project instead"
