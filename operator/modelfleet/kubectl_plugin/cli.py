"""`kubectl modelfleet`: see and steer modelfleet rollouts from kubectl.

kubectl runs any `kubectl-<name>` executable on PATH as `kubectl <name>`; installing the package puts
`kubectl-modelfleet` next to the Python it was installed with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TextIO

from modelfleet.kubectl_plugin import render
from modelfleet.kubectl_plugin.kube import Kube, PluginError, Target, connect
from modelfleet.kubectl_plugin.watch import Snapshot, Watcher

EPILOG = """\
examples:
  kubectl modelfleet status                 every Deployment and Monitor in the namespace
  kubectl modelfleet status iris -w         one rollout, redrawn as weights and verdicts change
  kubectl modelfleet promote iris           skip the remaining steps, promote the canary now
  kubectl modelfleet abort iris             roll the canary back now
  kubectl modelfleet retry iris             roll a rolled-back version out again
  kubectl modelfleet history iris           finished rollouts, newest first
"""

CLEAR = "\x1b[H\x1b[2J"


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Options are accepted before and after the command (`-n ml status` and `status -n ml`). Below the
    # command they default to SUPPRESS, so an option given before it is not overwritten.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's)")
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl modelfleet",
        description="See and steer modelfleet.io rollouts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    status = commands.add_parser("status", help="rollout status and the latest Monitor verdicts")
    status.add_argument("name", nargs="?", help="a Deployment (default: all in the namespace)")
    status.add_argument("-w", "--watch", action="store_true", help="redraw on every change until Ctrl-C")
    _common(status, top=False)

    helps = {
        "promote": "promote the canary now, skipping the remaining steps (modelfleet.io/promote)",
        "abort": "roll the canary back now (modelfleet.io/abort)",
        "retry": "roll a rolled-back version out again (modelfleet.io/retry)",
    }
    for command, text in helps.items():
        sub = commands.add_parser(command, help=text)
        sub.add_argument("name", help="the Deployment (modelfleet.io)")
        _common(sub, top=False)

    history = commands.add_parser("history", help="finished rollouts: version, result, reason, times")
    history.add_argument("name", help="the Deployment (modelfleet.io)")
    _common(history, top=False)
    return parser


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- commands ----------------------------------------------------------------------------------------


def status_once(kube: Kube, name: str | None, out: TextIO) -> None:
    now = now_utc()
    if name is None:
        deployments, _ = kube.list("Deployment")
        monitors, _ = kube.list("Monitor")
        print(render.render_list(deployments, monitors, kube.namespace, now), file=out)
        return
    deployment = kube.get("Deployment", name)
    monitors, _ = kube.list("Monitor")
    versions, _ = kube.list("ModelVersion")
    by_name = {v["metadata"]["name"]: v for v in versions}
    print(render.render_status(deployment, monitors, by_name, now), file=out)


def frame(snapshot: Snapshot, name: str | None, namespace: str, now: datetime) -> str:
    """The text of one watch redraw."""
    if name is None:
        text = render.render_list(snapshot.of("Deployment"), snapshot.of("Monitor"), namespace, now)
    else:
        deployment = snapshot.get("Deployment", name)
        if deployment is None:
            text = f"Deployment {namespace}/{name} does not exist (deleted?); waiting for it to come back."
        else:
            versions = {v["metadata"]["name"]: v for v in snapshot.of("ModelVersion")}
            text = render.render_status(deployment, snapshot.of("Monitor"), versions, now)
    trouble = [f"watch {kind}: {error}" for kind, error in sorted(snapshot.errors.items())]
    return "\n".join([text, *trouble])


def status_watch(kube: Kube, name: str | None, out: TextIO, tty: bool) -> None:
    """Redraw on every change seen through the watch API until Ctrl-C. On a terminal the screen is
    redrawn in place (and ages tick every second); otherwise each changed frame is printed in turn."""
    if name is not None:
        kube.get("Deployment", name)  # fail fast and clearly on a wrong name
    kinds = ("Deployment", "Monitor") if name is None else ("Deployment", "Monitor", "ModelVersion")
    fields = {"Deployment": f"metadata.name={name}"} if name else {}
    watcher = Watcher(kube, kinds, fields)
    watcher.start()
    target = f" {name}" if name else ""
    title = f"kubectl modelfleet status{target} -n {kube.namespace} --watch  (Ctrl-C to stop)"
    try:
        watcher.wait_synced(timeout=20)
        seen = -1
        last_text = ""
        while True:
            version = watcher.wait(seen, timeout=1.0 if tty else 60.0)
            changed = version != seen
            seen = version
            now = now_utc()
            text = frame(watcher.snapshot(), name, kube.namespace, now)
            if text == last_text or (not tty and not changed):
                continue
            last_text = text
            stamp = now.strftime("%H:%M:%S UTC")
            if tty:
                width = shutil.get_terminal_size((120, 40)).columns
                out.write(CLEAR + render.clip(f"{title}    {stamp}\n\n{text}", width) + "\n")
            else:
                out.write(f"--- {stamp} ---\n{text}\n\n")
            out.flush()
    finally:
        watcher.stop()


def request(kube: Kube, command: str, name: str, out: TextIO) -> None:
    """Set the manual-control annotation and say what the operator will do with it."""
    deployment = kube.get("Deployment", name)
    key = render.REQUESTS[command]
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    already = annotations.get(key) == "true"
    kube.annotate("Deployment", name, key, "true")
    if already:
        print(
            f"deployment.modelfleet.io/{name}: {key}=true was already set;"
            " the operator has not acted on it yet",
            file=out,
        )
    else:
        print(f"deployment.modelfleet.io/{name} annotated {key}=true", file=out)
    print(render.describe_request(command, deployment), file=out)


def history(kube: Kube, name: str, out: TextIO) -> None:
    print(render.render_history(kube.get("Deployment", name), now_utc()), file=out)


def run(args: argparse.Namespace, out: TextIO, connector: Callable[[Target], Kube] = connect) -> int:
    kube = connector(Target(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace))
    if args.command == "status":
        if args.watch:
            status_watch(kube, args.name, out, tty=out.isatty())
        else:
            status_once(kube, args.name, out)
    elif args.command in render.REQUESTS:
        request(kube, args.command, args.name, out)
    elif args.command == "history":
        history(kube, args.name, out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C ends a watch even when this process was started with SIGINT ignored (as a shell does for
    # a command it runs in the background, and everything started from there inherits)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run(args, sys.stdout)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, without a second error at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
