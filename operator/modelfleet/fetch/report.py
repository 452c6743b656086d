"""The fetcher's report: the small JSON that `modelfleet fetch --report FILE` writes, and its exit codes.

The model pod's init container writes it to /dev/termination-log, whose content the kubelet copies
into the container status (at most 4096 bytes); the operator reads it back with `parse_report`. This
module is the whole format, on both sides: it imports nothing but the standard library.

    {"result": "Fetched", "reason": "", "message": "fetched 3 files, 1.2 MiB, digest verified",
     "size": 1234567, "files": 3, "digest": "sha256:...", "downloadSeconds": 0.8, "verifySeconds": 0.0}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The kubelet keeps at most this many bytes of a termination message.
MAX_REPORT_BYTES = 4096


class Result(StrEnum):
    FETCHED = "Fetched"  # downloaded (and verified when a digest was given) into the destination
    CACHED = "Cached"  # taken from the node cache: nothing downloaded
    VERIFIED = "Verified"  # --check: downloaded into a scratch directory, verified, deleted
    FAILED = "Failed"


class Reason(StrEnum):
    NONE = ""
    ARTIFACT_UNREACHABLE = "ArtifactUnreachable"  # refused (401/403), missing (404), endpoint down, cut off
    DIGEST_MISMATCH = "DigestMismatch"
    ARTIFACT_TOO_LARGE = "ArtifactTooLarge"  # over --max-bytes
    FETCH_TIMEOUT = "FetchTimeout"  # over --timeout
    UNSUPPORTED_SCHEME = "UnsupportedScheme"
    INVALID_ARTIFACT = "InvalidArtifact"  # a URI or digest that cannot be right, an unsafe or empty artifact
    FETCH_FAILED = "FetchFailed"  # a local failure: the destination could not be written (disk full, ...)


# One exit code per reason, so that a pod's status says what went wrong even without the report.
# argparse's usage errors exit 2.
EXIT_CODES: dict[Reason, int] = {
    Reason.NONE: 0,
    Reason.FETCH_FAILED: 1,
    Reason.ARTIFACT_UNREACHABLE: 10,
    Reason.DIGEST_MISMATCH: 11,
    Reason.ARTIFACT_TOO_LARGE: 12,
    Reason.FETCH_TIMEOUT: 13,
    Reason.UNSUPPORTED_SCHEME: 14,
    Reason.INVALID_ARTIFACT: 15,
}
USAGE_EXIT_CODE = 2


@dataclass(frozen=True)
class Report:
    result: Result
    reason: Reason = Reason.NONE
    message: str = ""
    size: int = 0  # bytes of the artifact (or downloaded so far, on failure)
    files: int = 0
    digest: str = ""  # sha256:<hex> of what was fetched; "" when it is not known
    download_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is Reason.NONE and self.result is not Result.FAILED

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]


def render_report(report: Report) -> str:
    """The JSON text of `report`, shortened (the message only) to fit in MAX_REPORT_BYTES."""
    fields: dict[str, Any] = {
        "result": str(report.result),
        "reason": str(report.reason),
        "message": report.message,
        "size": report.size,
        "files": report.files,
        "digest": report.digest,
        "downloadSeconds": round(report.download_seconds, 3),
        "verifySeconds": round(report.verify_seconds, 3),
    }
    text = json.dumps(fields, separators=(",", ":"))
    message = report.message
    while len(text.encode()) > MAX_REPORT_BYTES:
        excess = len(text.encode()) - MAX_REPORT_BYTES
        message = message[: max(0, len(message) - excess - 3)]
        fields["message"] = message + "..."
        text = json.dumps(fields, separators=(",", ":"))
    return text


def parse_report(text: str) -> Report:
    """Read a report back (for example from a container's terminated state). ValueError when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a fetch report: {error.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("not a fetch report: not a JSON object")
    try:
        result = Result(data["result"])
        reason = Reason(data.get("reason", ""))
    except KeyError:
        raise ValueError("not a fetch report: no result") from None
    except ValueError as error:
        raise ValueError(f"not a fetch report: {error}") from None
    return Report(
        result=result,
        reason=reason,
        message=_typed(data, "message", str, ""),
        size=_typed(data, "size", int, 0),
        files=_typed(data, "files", int, 0),
        digest=_typed(data, "digest", str, ""),
        download_seconds=float(_typed(data, "downloadSeconds", (int, float), 0.0)),
        verify_seconds=float(_typed(data, "verifySeconds", (int, float), 0.0)),
    )


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"not a fetch report: {key} is {type(value).__name__}")
    return value
