"""The `modelfleet` command: one entry point for every process the project runs.

Each subcommand lives in its own module and is imported only when asked for, so that the router
does not pay for the operator's imports and the other way round.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, one-line help). The function takes the remaining argv and
# returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "operator": ("modelfleet.controllers.main", "main", "run the operator (kopf) against the cluster"),
    "router": ("modelfleet.router.main", "main", "run the inference router"),
    "model-server": ("modelfleet.modelserver.main", "main", "run the reference iris model server"),
    "runtime": ("modelfleet.runtime.main", "main", "launch a shared runtime image's server (mlserver)"),
    "crds": ("modelfleet.api.crdgen", "main", "generate the CRD YAML from the API models"),
    "fetch": ("modelfleet.fetch.main", "main", "download and verify a model artifact (init container)"),
    "digest": (
        "modelfleet.fetch.main",
        "digest_main",
        "print the sha256 digest of a model file or directory",
    ),
    "profile": (
        "modelfleet.analysis.profiling",
        "main",
        "profile training data (CSV, Parquet, .npy) for the dataDrift metric",
    ),
}


def usage() -> str:
    lines = ["usage: modelfleet COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`modelfleet COMMAND --help` describes each command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    if args[0] == "--version":
        from modelfleet import __version__

        print(__version__)
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"modelfleet: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = entry
    run: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
