"""`modelfleet runtime NAME`: the launcher of one shared runtime image (today: mlserver)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# runtime -> (module, one-line help); the module's main(argv) returns an exit code.
RUNTIMES: dict[str, tuple[str, str]] = {
    "mlserver": (
        "modelfleet.runtime.mlserver",
        "serve the artifact with MLServer (sklearn, xgboost, lightgbm, mlflow)",
    ),
}


def usage() -> str:
    lines = ["usage: modelfleet runtime RUNTIME [ARGS...]", "", "runtimes:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in RUNTIMES.items()]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0
    entry = RUNTIMES.get(args[0])
    if entry is None:
        print(f"modelfleet runtime: unknown runtime {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    run: Callable[[list[str]], int] = importlib.import_module(entry[0]).main
    return run(args[1:])
