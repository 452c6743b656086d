"""Print requirements from pyproject.toml, one a line, so that an image build can install the
dependencies before it copies the source (a source change then reuses the cached dependency layer).

    python requirements.py pyproject.toml             the project's dependencies
    python requirements.py pyproject.toml EXTRA...    only the requirements these extras add

Standard library only: it runs in the image's build stage before anything is installed.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def requirements(pyproject: dict[str, Any], extras: Sequence[str] = ()) -> list[str]:
    """The `[project]` dependencies, or with `extras`, the requirements those extras add."""
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise ValueError("pyproject.toml has no [project] table")
    if not extras:
        return list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        known = ", ".join(sorted(optional)) or "none"
        raise ValueError(f"unknown extra {', '.join(unknown)} (pyproject.toml defines: {known})")
    found: list[str] = []
    for name in extras:
        found += [req for req in optional[name] if req not in found]
    return found


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: requirements.py PYPROJECT [EXTRA...]", file=sys.stderr)
        return 2
    try:
        pyproject = tomllib.loads(Path(argv[0]).read_text())
        print("\n".join(requirements(pyproject, argv[1:])))
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        print(f"requirements.py: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
