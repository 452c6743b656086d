"""The kubectl plugin (`kubectl modelfleet`): rollout status, manual control and history.

`render` turns API objects into text (pure), `kube` talks to the API server, `watch` keeps a local
copy current through the watch API, `cli` is the command line.
"""

from modelfleet.kubectl_plugin.cli import main

__all__ = ["main"]
