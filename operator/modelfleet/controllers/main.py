"""`modelfleet operator`: run the controllers with kopf against the cluster.

kopf keeps its own bookkeeping (handler progress, the last handled spec) in annotations, because
the status of every kind is a strict schema that belongs to modelfleet alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from modelfleet.builders import MANAGED_BY

# Modules whose import registers kopf handlers. Each kind's controller lives in its own module.
HANDLER_MODULES = (
    "modelfleet.controllers.cache",
    "modelfleet.controllers.registry",
    "modelfleet.controllers.deployment",
    "modelfleet.controllers.monitor",
    "modelfleet.controllers.mlflow",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelfleet operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    parser.add_argument(
        "--liveness",
        default="",
        help="serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="run only while holding the Lease `modelfleet-operator` (one active replica); exit non-zero "
        "when it is lost",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default="",
        help="namespace of the leader-election Lease (default: the pod's namespace, else `default`)",
    )
    parser.add_argument(
        "--leader-election-lease-provided",
        action="store_true",
        help="the Lease is made by the installation (the chart): wait for it instead of creating it",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def load_handlers() -> list[str]:
    loaded = []
    for module in HANDLER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        loaded.append(module)
    return loaded


OWNED_KINDS: tuple[tuple[str, str] | tuple[str, str, str], ...] = (
    ("apps", "v1", "deployments"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("v1", "pods"),
)
"""The kinds modelfleet does not define and watches only for its own objects."""
OWNED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def select_owned(settings: kopf.OperatorSettings) -> None:
    """List and watch only the operator's own objects of the kinds it does not define, filtered by the API
    server: kopf keeps a small memory of every object it watches, and a cluster's other pods, ConfigMaps
    and Services are none of the operator's business."""
    for kind in OWNED_KINDS:
        settings.watching.label_selectors[kind] = OWNED_SELECTOR


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # The controllers, built once with what they need; kopf's handlers find them in the memo. Their
    # reads come from kopf's indexes (the watch caches), which kopf passes to every handler by name.
    # (A kopf run of some handler modules alone, the registry's say, builds none.)
    if set(HANDLER_MODULES) <= set(sys.modules):
        from modelfleet.controllers import leader
        from modelfleet.controllers.adminkey import AdminKey
        from modelfleet.controllers.cache import Cache
        from modelfleet.controllers.deployment import DeploymentController
        from modelfleet.controllers.mlflow import MlflowSync
        from modelfleet.controllers.monitor import MonitorController
        from modelfleet.controllers.registry import RegistryController

        cache = Cache(kwargs)
        # the key of the routers' admin tokens: the Deployment controller writes them, the router
        # provider sends them; read once (made by the first operator), never a user's Secret
        admin_key = AdminKey.from_environment(leader.default_namespace())
        memo.deployments = DeploymentController(cache, admin_key=admin_key)
        memo.fetch = memo.deployments.fetch  # the registry's artifact checks fetch as the pods do
        memo.monitors = MonitorController.default(
            cache,
            wake_deployment=memo.deployments.wake,
            admin_key=admin_key,
            admin_refused=memo.deployments.restore_admin_secret,
        )
        memo.registry = RegistryController()
        memo.mlflow = MlflowSync(publish=memo.registry.publish_source, model_version=cache.model_version)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.modelfleet.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.modelfleet.io", key="last-handled-configuration"
    )
    settings.posting.reporting_component = "modelfleet"
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's would repeat it
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # No worker limit (kopf's default): handlers wait until every index is filled, and filling the
    # indexes takes workers too, so a limit below the number of watched objects deadlocks a restart
    # (seen with 1,000 Deployments and a limit of 64: nothing reconciled after the operator restarted).
    settings.batching.worker_limit = None
    select_owned(settings)


async def wait_for_the_api_server(stop_flag: asyncio.Event | None = None, poll: float = 0.5) -> None:
    """Until the API server is ready (an operator started during an API server outage waits it out,
    rather than let kopf resolve the kinds it watches against a half-started server)."""
    from modelfleet.controllers import kube

    log = logging.getLogger("modelfleet")
    waited = 0.0
    while not await asyncio.to_thread(kube.api_ready):
        if stop_flag is not None and stop_flag.is_set():
            return
        if waited % 5.0 < poll:
            log.info("waiting for the API server to be ready (%.0fs so far)", waited)
        await asyncio.sleep(poll)
        waited += poll


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from modelfleet.controllers import kube

    try:
        threads = kube.api_threads()
    except ValueError as error:
        print(f"modelfleet operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf says "Handler ... succeeded" at INFO for every watch event handled: with 10,000 Deployments
        # and their owned objects, over 100,000 lines in the first minutes and a share of the CPU. Our own
        # loggers say what happened; kopf's warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from modelfleet.controllers import kopfscale

    if not kopfscale.install():  # a (re)start with tens of thousands of watched objects: see the module
        logging.getLogger("modelfleet").warning(
            "kopf's toggle set is not the one expected: kopf's own is used"
            " (slow to start with very many objects)"
        )
    loaded = load_handlers()
    logging.getLogger("modelfleet").info("controllers: %s", ", ".join(loaded) or "none")
    namespaces = args.namespace or None

    async def run_operator(stop_flag: asyncio.Event | None = None) -> None:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="modelfleet-api")
        )
        await wait_for_the_api_server(stop_flag)
        await kopf.operator(
            clusterwide=namespaces is None,
            namespaces=namespaces or (),
            standalone=True,  # no kopf peering: one active replica comes from --leader-elect
            liveness_endpoint=args.liveness or None,
            stop_flag=stop_flag,
        )

    if args.leader_elect:
        from modelfleet.controllers import leader

        lease_namespace = args.leader_election_namespace or leader.default_namespace()
        elector = leader.LeaderElector(
            leader.KubernetesLeaseStore(lease_namespace, leader.LEASE_NAME),
            leader.default_identity(),
            same_pod=leader.in_a_pod(),
            create=not args.leader_election_lease_provided,
        )
        return asyncio.run(leader.run_as_leader(elector, run_operator, liveness_url=args.liveness))
    asyncio.run(run_operator())
    return 0
