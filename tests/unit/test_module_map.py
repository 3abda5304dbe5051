"""DEVELOPERS.md's module map names every module of the three packages, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"modelroute_contract": "contract", "modelroute_operator": "operator", "modelroute_sidecar": "sidecar"}


def modules_on_disk() -> set[str]:
    found = set()
    for package, directory in ROOTS.items():
        for path in (REPO / directory / package).rglob("*.py"):
            parts = path.relative_to(REPO / directory).with_suffix("").parts
            if parts[-1] != "__init__":
                found.add(".".join(parts))
    return found


def modules_in_map() -> set[str]:
    text = (REPO / "DEVELOPERS.md").read_text()
    section = text[text.index("## Module map") : text.index("## Rules we keep")]
    found, package = set(), ""
    for line in section.splitlines():
        heading = re.match(r"^`(modelroute_[a-z_.]+)` \(", line)
        if heading:
            package = heading.group(1)
            continue
        entry = re.match(r"^- `([a-z_.]+)` — ", line)
        if entry and package:
            name = entry.group(1)
            found.add(name if name.startswith("modelroute_") else f"{package}.{name}")
    return found


def test_the_module_map_matches_the_packages() -> None:
    on_disk, in_map = modules_on_disk(), modules_in_map()
    assert not on_disk - in_map, f"modules missing from DEVELOPERS.md's module map: {sorted(on_disk - in_map)}"
    assert not in_map - on_disk, f"DEVELOPERS.md names modules that do not exist: {sorted(in_map - on_disk)}"
