"""After an operator restart, an owned object that already holds its manifest is not applied again; one
edited while the operator was down is (the live object from the watch against the manifest)."""

from __future__ import annotations

import copy
from typing import Any

from modelfleet.controllers.deployment import Applier
from modelfleet.rollout.observe import live_matches

MANIFEST: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "iris-iris-v1",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/managed-by": "modelfleet"},
        "ownerReferences": [{"apiVersion": "modelfleet.io/v1alpha1", "kind": "Deployment", "name": "iris"}],
    },
    "spec": {"selector": {"app": "iris-v1"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}


def live(**spec: Any) -> dict[str, Any]:
    """The Service as the API server keeps it: defaults and its own fields added."""
    body = copy.deepcopy(MANIFEST)
    body["metadata"] |= {"resourceVersion": "41", "uid": "u-1", "managedFields": [{"manager": "modelfleet"}]}
    body["spec"]["ports"][0]["protocol"] = "TCP"
    body["spec"] |= {"clusterIP": "10.211.0.9", "type": "ClusterIP", "sessionAffinity": "None"} | spec
    body["status"] = {"loadBalancer": {}}
    return body


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(manifest)
        return live() | {"metadata": {**live()["metadata"], "resourceVersion": str(42 + len(self.sent))}}


def test_the_live_object_holds_the_manifest_despite_defaults_and_others_fields() -> None:
    assert live_matches(MANIFEST, live())
    edited = live()
    edited["spec"]["selector"] = {"app": "something-else"}
    assert not live_matches(MANIFEST, edited)
    extra_port = live()
    extra_port["spec"]["ports"].append({"name": "debug", "port": 9000, "protocol": "TCP"})
    assert not live_matches(MANIFEST, extra_port)  # lists match item by item
    assert not live_matches({"a": 1}, {"a": True})  # the type counts too
    assert not live_matches({"a": {"b": 1}}, {"a": "b"})


def test_after_a_restart_an_object_as_it_should_be_is_not_sent_again() -> None:
    send = Recorder()
    applier = Applier(send=send)
    assert not applier.changed_by_others(None, "ml", "v1", "Service", live())  # the watch's first listing

    applier.apply(MANIFEST)

    assert send.sent == []
    key = ("ml", "v1/Service", "iris-iris-v1")
    assert applier.applied[key][1] == "r41"
    assert applier.cluster_ips[key] == "10.211.0.9"  # kept, should somebody delete it later
    assert applier.live == {}
    # and an edit by somebody else after that is still seen as one
    assert applier.changed_by_others(
        "MODIFIED",
        "ml",
        "v1",
        "Service",
        live() | {"metadata": {**live()["metadata"], "resourceVersion": "50"}},
    )


def test_after_a_restart_an_object_edited_while_the_operator_was_down_is_applied_again() -> None:
    send = Recorder()
    applier = Applier(send=send)
    applier.changed_by_others(None, "ml", "v1", "Service", live(selector={"app": "edited-by-hand"}))

    applier.apply(MANIFEST)

    assert send.sent == [MANIFEST]


def test_with_nothing_seen_on_the_watch_the_manifest_is_applied_once() -> None:
    send = Recorder()
    applier = Applier(send=send)
    applier.apply(MANIFEST)
    applier.apply(MANIFEST)
    assert send.sent == [MANIFEST]


def test_a_deleted_object_is_not_taken_for_its_last_live_state() -> None:
    send = Recorder()
    applier = Applier(send=send)
    applier.changed_by_others(None, "ml", "v1", "Service", live())
    applier.changed_by_others("DELETED", "ml", "v1", "Service", live())

    applier.apply(MANIFEST)

    assert send.sent == [MANIFEST]


def test_an_event_seen_while_an_apply_is_on_its_way_does_not_hide_a_later_hand_edit() -> None:
    """The watch may deliver the object an apply creates before the apply returns: that event must not
    count as the live object later, when a hand edit (another mark) calls for the manifest again."""
    applier = Applier()

    def send(manifest: dict[str, Any]) -> dict[str, Any]:
        created = live() | {"metadata": {**live()["metadata"], "resourceVersion": "50"}}
        # the watch delivers the new object before the apply's answer is in
        assert not applier.changed_by_others("ADDED", "ml", "v1", "Service", created)
        sent.append(manifest)
        return created

    sent: list[dict[str, Any]] = []
    applier.send = send
    applier.apply(MANIFEST)
    assert len(sent) == 1

    edited = live(selector={"app": "something-else"})
    edited["metadata"]["resourceVersion"] = "51"
    assert applier.changed_by_others("MODIFIED", "ml", "v1", "Service", edited)

    applier.apply(MANIFEST)
    assert len(sent) == 2  # sent again: the edit is undone
