"""The rollout state machine: a pure function of (spec, status, observation, now).

`decide` returns the complete new Deployment status and the actions (versions to run or remove, the
traffic split, annotations consumed, events) that the controller carries out. docs/rollout.md
describes the phases, the step logic and the verdict rules.
"""

from modelfleet.rollout.machine import addressed_versions, decide, step_weight
from modelfleet.rollout.observe import resolve_target
from modelfleet.rollout.types import (
    SERVABLE,
    Action,
    ConditionReason,
    ConsumeAnnotation,
    Decision,
    EnsureVersion,
    Event,
    EventReason,
    MonitorObservation,
    Observation,
    RemoveVersion,
    Servability,
    SetTraffic,
    Target,
)

__all__ = [
    "SERVABLE",
    "Action",
    "ConditionReason",
    "ConsumeAnnotation",
    "Decision",
    "EnsureVersion",
    "Event",
    "EventReason",
    "MonitorObservation",
    "Observation",
    "RemoveVersion",
    "Servability",
    "SetTraffic",
    "Target",
    "addressed_versions",
    "decide",
    "resolve_target",
    "step_weight",
]
