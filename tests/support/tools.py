"""Command-line tools the tests run, found the way the project builds them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from support.cluster import VERSIONS


def helm_binary() -> str | None:
    """The pinned helm that `cluster/build.sh helm` builds, else helm on PATH, else None."""
    cache = Path(os.environ.get("MODELFLEET_CACHE", Path.home() / ".cache" / "modelfleet"))
    pinned = cache / "bin" / f"helm-{VERSIONS['HELM_VERSION']}" / "helm"
    if pinned.exists():
        return str(pinned)
    return shutil.which("helm")


def lua_binary() -> str | None:
    """A Lua 5.x interpreter (Argo CD runs health checks with gopher-lua, which is Lua 5.1)."""
    for name in ("lua5.4", "lua5.3", "lua5.1", "lua"):
        found = shutil.which(name)
        if found:
            return found
    return None


def promtool_binary() -> str | None:
    """Prometheus's promtool (Debian package `prometheus`), to parse PromQL and rule files."""
    return shutil.which("promtool")
