"""What `kubectl modelfleet` prints: pure functions from API objects (dicts, as the API server sends
them) to text. No cluster access here; the clock is passed in.

Objects are parsed with the `modelfleet.api` models. An object whose spec does not parse (e.g. written
for a newer CRD) is still shown from its status, with a note saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelfleet.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    CanaryStep,
    Condition,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    InvalidResourceError,
    Measurement,
    ModelVersion,
    ModelVersionSpec,
    Monitor,
    MonitorSpec,
    MonitorStatus,
    StrategyType,
    format_duration,
)

Obj = Mapping[str, Any]

#: Manual-control requests: command name -> annotation.
REQUESTS = {"promote": PROMOTE_ANNOTATION, "abort": ABORT_ANNOTATION, "retry": RETRY_ANNOTATION}

# --- parsing -----------------------------------------------------------------------------------------


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


@dataclass(frozen=True)
class DeploymentView:
    """A modelfleet Deployment as shown: the spec when it parses, the status always."""

    name: str
    namespace: str
    spec: DeploymentSpec | None
    status: DeploymentStatus
    annotations: Mapping[str, str] = field(default_factory=dict)
    problem: str = ""
    """Why the spec (or status) could not be parsed; empty when all is well."""

    @classmethod
    def of(cls, obj: Obj) -> DeploymentView:
        meta = _meta(obj)
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        try:
            parsed = Deployment.from_k8s(obj)
            return cls(name, namespace, parsed.spec, parsed.status, annotations)
        except InvalidResourceError as error:
            problem = str(error)
        try:
            status = DeploymentStatus.model_validate(obj.get("status") or {})
        except ValidationError as error:
            problem += f"; status does not parse ({error.error_count()} errors)"
            status = DeploymentStatus()
        return cls(name, namespace, None, status, annotations, problem)

    @property
    def steps(self) -> tuple[CanaryStep, ...]:
        if self.spec is None or self.spec.strategy.type != StrategyType.CANARY:
            return ()
        return self.spec.strategy.canary.steps

    @property
    def monitor_name(self) -> str:
        return (self.spec.strategy.canary.monitor or "") if self.spec else ""

    @property
    def alias(self) -> str:
        """The MLflow alias the spec follows (versionFrom.mlflowAlias); empty when it names its version."""
        return self.spec.alias if self.spec else ""

    @property
    def target(self) -> str:
        """The version the spec asks for: spec.version, or what the operator resolved versionFrom to
        (status.targetVersion); empty when unknown."""
        if self.spec is not None and self.spec.version:
            return self.spec.version
        return self.status.target_version

    @property
    def until_moved(self) -> str:
        """What releases a rolled-back version: `spec.version changes` or `alias champion moves`."""
        return f"alias {self.alias} moves" if self.alias else "spec.version changes"

    def requested(self) -> list[str]:
        """Manual-control requests set and not yet consumed by the operator."""
        return [cmd for cmd, key in REQUESTS.items() if self.annotations.get(key) == "true"]


@dataclass(frozen=True)
class MonitorView:
    name: str
    deployment: str
    spec: MonitorSpec | None
    status: MonitorStatus
    problem: str = ""

    @classmethod
    def of(cls, obj: Obj) -> MonitorView:
        name = str(_meta(obj).get("name", ""))
        raw_spec = obj.get("spec")
        deployment = str(raw_spec.get("deployment", "")) if isinstance(raw_spec, Mapping) else ""
        try:
            parsed = Monitor.from_k8s(obj)
            return cls(name, parsed.spec.deployment, parsed.spec, parsed.status)
        except InvalidResourceError as error:
            problem = str(error)
        try:
            status = MonitorStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            status = MonitorStatus()
        return cls(name, deployment, None, status, problem)


def monitors_of(deployment: DeploymentView, monitors: Sequence[Obj]) -> list[MonitorView]:
    """The Monitors that judge this Deployment: those naming it, and the one its canary names."""
    views = [MonitorView.of(m) for m in monitors]
    return sorted(
        (v for v in views if v.deployment == deployment.name or v.name == deployment.monitor_name),
        key=lambda v: (v.name != deployment.monitor_name, v.name),
    )


# --- small formatters --------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks (like kubectl get)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def age(then: datetime | None, now: datetime) -> str:
    """Elapsed time the way kubectl shows ages: `5s`, `3m12s`, `2h5m`, `4d`. `-` when unknown."""
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes}m" if minutes and hours < 10 else f"{hours}h"
    return f"{seconds // 86400}d"


def elapsed(start: datetime | None, end: datetime | None) -> str:
    """The duration between two times, e.g. `1m12s`; `-` when either is unknown."""
    if start is None or end is None:
        return "-"
    return format_duration(max(0.0, round((end - start).total_seconds())))


def clock(value: datetime | None) -> str:
    """A UTC time to the second: `2024-05-01 10:00:00`."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def number(value: float | None) -> str:
    """A metric value, short: 4 significant digits, `-` when it could not be measured."""
    if value is None:
        return "-"
    return f"{value:.4g}"


def weight_bar(weight: int, width: int = 20) -> str:
    """`[####----------------]  20%`: the canary's share of live traffic."""
    weight = min(100, max(0, weight))
    filled = round(weight * width / 100)
    return f"[{'#' * filled}{'-' * (width - filled)}] {weight:>3}%"


def step_text(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"{step.set_weight}%"
    if step.pause is not None and step.pause.duration is not None:
        return f"pause {format_duration(step.pause.duration)}"
    return "pause (until promoted)"


def step_position(view: DeploymentView) -> str:
    """`2/4` while a canary rollout is under way, `-` otherwise."""
    steps = view.steps
    if not view.status.canary_version or not steps:
        return "-"
    return f"{min(view.status.current_step + 1, len(steps))}/{len(steps)}"


def steps_line(view: DeploymentView) -> str:
    """The canary steps with the one under way marked: `20% (done) > pause 10s (now) > 50% > pause 10s`."""
    steps = view.steps
    if not steps:
        return "Immediate (no steps)" if view.spec else "-"
    rolling = bool(view.status.canary_version)
    started = view.status.step_started_at is not None
    parts = []
    for index, step in enumerate(steps):
        text = step_text(step)
        if rolling and index < view.status.current_step:
            text += " (done)"
        elif rolling and index == view.status.current_step:
            text = f"[{text}]" if started else f"{text} (next, waiting for pods)"
        parts.append(text)
    return " > ".join(parts)


def target_line(view: DeploymentView) -> str:
    """`iris-v4 (spec.version)`, `iris-v4 (alias champion)`, or `none (alias champion resolves to no
    version)` while the alias resolves to none (the message says why)."""
    if not view.alias:
        return f"{view.target} (spec.version)" if view.target else "-"
    if not view.target:
        return f"none (alias {view.alias} resolves to no version)"
    return f"{view.target} (alias {view.alias})"


def phase_of(view: DeploymentView) -> str:
    return view.status.phase.value if view.status.phase else "Unknown"


def conditions_line(conditions: Sequence[Condition]) -> str:
    """`Ready=False (Progressing), Progressing=True, Degraded=False`."""
    if not conditions:
        return "-"
    parts = []
    for c in conditions:
        reason = f" ({c.reason})" if c.reason and c.status.value != "True" else ""
        parts.append(f"{c.type}={c.status.value}{reason}")
    return ", ".join(parts)


def clip(text: str, width: int | None) -> str:
    """Each line cut to `width` characters (`...` marks a cut); `None` leaves the text alone."""
    if width is None or width < 10:
        return text
    return "\n".join(line if len(line) <= width else line[: width - 3] + "..." for line in text.splitlines())


# --- status ------------------------------------------------------------------------------------------

ROLLOUT_HEADERS = ("STABLE", "CANARY", "WEIGHT", "STEP", "PHASE", "MESSAGE")


def rollout_row(view: DeploymentView) -> list[str]:
    s = view.status
    return [
        s.stable_version or "-",
        s.canary_version or "-",
        weight_bar(s.canary_weight) if s.canary_version else "-",
        step_position(view),
        phase_of(view),
        s.message or "-",
    ]


def verdicts_table(measurement: Measurement, indent: str = "  ") -> str:
    rows = [
        [r.name, number(r.value), r.threshold or "-", r.verdict.value, r.message or ""]
        for r in measurement.results
    ]
    return table(("METRIC", "VALUE", "THRESHOLD", "VERDICT", "DETAIL"), rows, indent)


def monitor_section(monitor: MonitorView, deployment: DeploymentView | None, now: datetime) -> str:
    """`Monitor iris-quality: Passing, iris-v2 measured 10:00:05 (3s ago)` and the verdict table."""
    status = monitor.status
    head = f"Monitor {monitor.name}: {status.phase.value if status.phase else 'no verdict yet'}"
    last = status.last_measurement
    if last is not None:
        head += f", {last.version or 'version ?'} measured {clock(last.time)} ({age(last.time, now)} ago)"
    if deployment is not None and monitor.spec is not None and monitor.name == deployment.monitor_name:
        analysis = deployment.status.analysis
        head += f", consecutive failures {analysis.failures}/{monitor.spec.failure_limit}"
    lines = [head]
    if monitor.problem:
        lines.append(f"  note: {monitor.problem}")
    if last is None or not last.results:
        lines.append("  no measurement yet")
    else:
        lines.append(verdicts_table(last))
    return "\n".join(lines)


def version_rows(view: DeploymentView, versions: Mapping[str, Obj]) -> list[list[str]]:
    s = view.status
    roles = [(s.stable_version, "stable"), (s.canary_version, "canary")]
    if s.previous_stable_version and s.previous_warm_until is not None:
        roles.append((s.previous_stable_version, "previous (warm)"))
    fallback = view.spec.fallback.version if view.spec is not None else None
    if fallback and fallback not in {s.stable_version, s.canary_version}:
        roles.append((fallback, "fallback (serving)" if s.fallback.version == fallback else "fallback"))
    if view.target and view.target not in {s.stable_version, s.canary_version}:
        roles.append((view.target, f"alias {view.alias}" if view.alias else "requested"))
    rows = []
    for name, role in roles:
        if not name:
            continue
        obj = versions.get(name)
        if obj is None:
            rows.append([name, role, "-", "-", "not found"])
            continue
        try:
            mv = ModelVersion.from_k8s(obj)
        except InvalidResourceError as error:
            rows.append([name, role, "-", "-", f"invalid: {error}"])
            continue
        phase = mv.status.phase.value if mv.status.phase else "Unknown"
        rows.append([name, role, mv.spec.version, mv.spec.image or _artifact_text(mv.spec), phase])
    return rows


def _artifact_text(spec: ModelVersionSpec) -> str:
    """`s3://models/iris/4/ (sklearn)` for an artifact version."""
    if spec.artifact is None:
        return "-"
    return f"{spec.artifact.uri} ({spec.artifact.format})"


def render_status(
    deployment: Obj, monitors: Sequence[Obj], versions: Mapping[str, Obj], now: datetime
) -> str:
    """Everything about one Deployment's rollout: the summary table, the steps, the versions in play,
    the latest Monitor verdicts, pending requests and the last finished rollout."""
    view = DeploymentView.of(deployment)
    s = view.status
    model = view.spec.model if view.spec else "?"
    head = f"Deployment {view.namespace}/{view.name}  model {model}"
    if s.endpoint:
        head += f"  endpoint {s.endpoint}"
    lines = [head]
    if view.problem:
        lines.append(f"note: {view.problem}")
    lines += ["", table(ROLLOUT_HEADERS, [rollout_row(view)]), ""]
    lines.append(f"Target:      {target_line(view)}")
    lines.append(f"Steps:       {steps_line(view)}")
    lines.append(f"Conditions:  {conditions_line(s.conditions)}")
    if s.canary_version and s.rollout_started_at is not None:
        lines.append(f"Rollout:     {s.canary_version} started {age(s.rollout_started_at, now)} ago")
    if s.fallback.active and s.fallback.since is not None:
        what = s.fallback.version or "fallback.response"
        lines.append(f"Fallback:    {what} serving for {age(s.fallback.since, now)}: {s.fallback.reason}")
    if s.rolled_back_version and not s.canary_version:
        lines.append(
            f"Held back:   {s.rolled_back_version} (not rolled out again until {view.until_moved} "
            f"or `kubectl modelfleet retry {view.name}`)"
        )
    requested = view.requested()
    if requested:
        lines.append(f"Requested:   {', '.join(requested)} (waiting for the operator)")
    if s.history:
        last = s.history[0]
        reason = f": {last.reason}" if last.reason else ""
        lines.append(
            f"Last:        {last.version} {last.result.value}{reason} ({age(last.finished_at, now)} ago)"
        )
    rows = version_rows(view, versions)
    if rows:
        header = ("VERSION", "ROLE", "MODEL VERSION", "IMAGE / ARTIFACT", "PHASE")
        lines += ["", "Versions:", table(header, rows, "  ")]
    judged = monitors_of(view, monitors)
    if view.monitor_name and all(m.name != view.monitor_name for m in judged):
        lines += ["", f"Monitor {view.monitor_name}: not found"]
    for monitor in judged:
        lines += ["", monitor_section(monitor, view, now)]
    return "\n".join(lines)


def render_list(deployments: Sequence[Obj], monitors: Sequence[Obj], namespace: str, now: datetime) -> str:
    """Every Deployment of a namespace in one table, then every Monitor with its latest verdicts."""
    if not deployments and not monitors:
        return f"No modelfleet Deployments or Monitors in namespace {namespace}."
    views = sorted((DeploymentView.of(d) for d in deployments), key=lambda v: v.name)
    lines = []
    if views:
        rows = [[v.name, v.spec.model if v.spec else "?", *rollout_row(v)] for v in views]
        lines.append(table(("NAME", "MODEL", *ROLLOUT_HEADERS), rows))
    else:
        lines.append(f"No modelfleet Deployments in namespace {namespace}.")
    monitor_views = sorted((MonitorView.of(m) for m in monitors), key=lambda m: m.name)
    if monitor_views:
        rows = []
        for m in monitor_views:
            last = m.status.last_measurement
            verdicts = (
                ", ".join(f"{r.name} {number(r.value)} {r.verdict.value}" for r in last.results)
                if last and last.results
                else "no measurement yet"
            )
            rows.append(
                [
                    m.name,
                    m.deployment or "?",
                    m.status.phase.value if m.status.phase else "-",
                    (last.version or "-") if last else "-",
                    age(last.time, now) if last else "-",
                    verdicts,
                ]
            )
        lines += ["", table(("MONITOR", "DEPLOYMENT", "PHASE", "VERSION", "MEASURED", "VERDICTS"), rows)]
    return "\n".join(lines)


def render_line(deployment: Obj, monitors: Sequence[Obj]) -> str:
    """One line for a log of changes: phase, versions, weight, step and the latest verdicts."""
    view = DeploymentView.of(deployment)
    s = view.status
    parts = [f"{phase_of(view):<11}", f"stable {s.stable_version or '-'}"]
    if s.canary_version:
        parts.append(f"canary {s.canary_version} {weight_bar(s.canary_weight, 10)}")
        parts.append(f"step {step_position(view)}")
    for monitor in monitors_of(view, monitors):
        last = monitor.status.last_measurement
        if last is not None and last.results:
            verdicts = ", ".join(f"{r.name} {number(r.value)} {r.verdict.value}" for r in last.results)
            parts.append(f"| {monitor.name} on {last.version}: {verdicts}")
    return "  ".join(parts)


# --- history -----------------------------------------------------------------------------------------


def history_row(entry: HistoryEntry) -> list[str]:
    return [
        entry.version,
        entry.result.value,
        entry.reason or "-",
        clock(entry.started_at),
        clock(entry.finished_at),
        elapsed(entry.started_at, entry.finished_at),
    ]


def render_history(deployment: Obj, now: datetime) -> str:
    """The finished rollouts, newest first, and the one under way if any."""
    view = DeploymentView.of(deployment)
    s = view.status
    lines = [f"Rollout history of Deployment {view.namespace}/{view.name} (newest first, times in UTC)"]
    if s.canary_version:
        lines.append(
            f"Under way: {s.canary_version}, step {step_position(view)}, weight {s.canary_weight}%, "
            f"started {clock(s.rollout_started_at)} ({age(s.rollout_started_at, now)} ago)"
        )
    if not s.history:
        lines.append("No finished rollouts yet.")
        return "\n".join(lines)
    headers = ("VERSION", "RESULT", "REASON", "STARTED", "FINISHED", "DURATION")
    lines += ["", table(headers, [history_row(e) for e in s.history])]
    return "\n".join(lines)


# --- manual control ----------------------------------------------------------------------------------


def describe_request(command: str, deployment: Obj) -> str:
    """What the operator will do with `command` (promote, abort, retry) given the Deployment's status."""
    view = DeploymentView.of(deployment)
    s = view.status
    name = view.name
    rolling = bool(s.canary_version)
    at = f"step {step_position(view)}, weight {s.canary_weight}%" if rolling else ""
    if command == "promote":
        if rolling:
            return (
                f"{name}: {s.canary_version} will be promoted to stable now ({at}), skipping the remaining"
                f" steps; {s.stable_version or 'the old stable version'} stays warm for a quick rollback."
                " If the canary's pods are not ready yet, the operator waits for them first."
            )
        return (
            f"{name}: no rollout is under way (phase {phase_of(view)}), so the operator will ignore the"
            " request (event PromoteIgnored)."
        )
    if command == "abort":
        if rolling:
            return (
                f"{name}: {s.canary_version} will be rolled back now ({at}): weight 0,"
                f" {s.stable_version or 'the stable version'} serves all traffic. It will not be rolled out"
                f" again until {view.until_moved} or `kubectl modelfleet retry {name}`."
            )
        return (
            f"{name}: no rollout is under way (phase {phase_of(view)}), so the operator will ignore the"
            " request (event AbortIgnored)."
        )
    if command == "retry":
        if rolling:
            return (
                f"{name}: a rollout of {s.canary_version} is under way; retry applies only to a rolled-back"
                " version, so it changes nothing now."
            )
        if not s.rolled_back_version:
            return f"{name}: no version is held back after a rollback, so there is nothing to retry."
        wanted = view.target
        reason = next((h.reason for h in s.history if h.version == s.rolled_back_version and h.reason), "")
        why = f" (rolled back: {reason})" if reason else ""
        if wanted and wanted != s.rolled_back_version:
            asks = f"alias {view.alias} points at" if view.alias else "spec.version is"
            return (
                f"{name}: {s.rolled_back_version}{why} will no longer be held back; {asks} {wanted},"
                f" so that is what rolls out."
            )
        return f"{name}: {s.rolled_back_version}{why} will be rolled out again from the first step."
    raise ValueError(f"unknown request {command!r}: expected one of {', '.join(REQUESTS)}")
