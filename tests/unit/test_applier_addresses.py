"""A deleted owned Service is created again at its old cluster IP: asked for again while the API server
still holds the address (it frees it a moment after the deletion is seen), given up for a new one when
the address stays taken or is refused for another reason."""

from __future__ import annotations

import copy
from typing import Any

from modelfleet.controllers import kube
from modelfleet.controllers.deployment import Applier

KEY = ("ml", "v1/Service", "iris")
MANIFEST: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "iris", "namespace": "ml"},
    "spec": {"selector": {"app": "router"}, "ports": [{"port": 80, "targetPort": 8080}]},
}
# what kube.apply raises for the API server's answer to the apply (a PATCH) of a held address
HELD = kube.refusal(
    "PATCH",
    "/api/v1/namespaces/ml/services/iris",
    422,
    'Service "iris" is invalid: spec.clusterIPs: Invalid value: ["10.211.0.110"]: failed to allocate IP '
    "10.211.0.110: provided IP is already allocated",
)


class Server:
    """Answers the applies: refuses the old address `held` times, then gives it (or a new address to an
    apply that asks for none)."""

    def __init__(self, held: int, refusal: Exception = HELD) -> None:
        self.held = held
        self.refusal = refusal
        self.sent: list[dict[str, Any]] = []

    def __call__(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(manifest)
        asked = manifest["spec"].get("clusterIP")
        if asked and self.held > 0:
            self.held -= 1
            raise self.refusal
        body = copy.deepcopy(manifest)
        body["metadata"] |= {"uid": f"u-{len(self.sent)}", "resourceVersion": str(len(self.sent))}
        body["spec"]["clusterIP"] = asked or "10.211.0.216"
        return body


def deleted_service(server: Server, slept: list[float], wait: float = 5.0) -> Applier:
    applier = Applier(send=server, sleep=slept.append, address_wait=wait)
    applier.apply(copy.deepcopy(MANIFEST))
    applier.cluster_ips[KEY] = "10.211.0.110"  # the address it had
    server.sent.clear()
    assert applier.changed_by_others("DELETED", "ml", "v1", "Service", {"metadata": {"name": "iris"}})
    return applier


def test_a_deleted_service_gets_its_address_again_once_the_api_server_frees_it() -> None:
    server, slept = Server(held=3), []
    applier = deleted_service(server, slept)

    applier.apply(copy.deepcopy(MANIFEST))

    assert [m["spec"].get("clusterIP") for m in server.sent] == ["10.211.0.110"] * 4
    assert slept == [0.05, 0.1, 0.2]  # growing waits between the asks
    assert applier.cluster_ips[KEY] == "10.211.0.110"


def test_an_address_that_stays_taken_is_given_up_for_a_new_one_after_the_wait() -> None:
    server, slept = Server(held=1000), []
    applier = deleted_service(server, slept, wait=2.0)

    applier.apply(copy.deepcopy(MANIFEST))

    asked = [m["spec"].get("clusterIP") for m in server.sent]
    assert asked[-1] is None
    assert set(asked[:-1]) == {"10.211.0.110"}
    assert 2.0 <= sum(slept) < 2.6  # waited about as long as it was told, no more
    assert max(slept) <= 0.5
    assert applier.cluster_ips[KEY] == "10.211.0.216"  # the new address is the one kept now


def test_another_refusal_of_the_address_is_not_asked_again() -> None:
    refused = kube.refusal(
        "PATCH",
        "/api/v1/namespaces/ml/services/iris",
        422,
        'Service "iris" is invalid: spec.clusterIPs: Invalid value: not in range',
    )
    server, slept = Server(held=1, refusal=refused), []
    applier = deleted_service(server, slept)

    applier.apply(copy.deepcopy(MANIFEST))

    assert [m["spec"].get("clusterIP") for m in server.sent] == ["10.211.0.110", None]
    assert slept == []
