"""Reading the Secrets that users name for credentials: `get` only, never a list or a watch, and only
where the chart grants it (`mlflow.readSecrets`, `referenceProfiles.readSecrets`)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from modelfleet.controllers import kube


async def read_secret(namespace: str, name: str) -> Mapping[str, str] | None:
    """The Secret's data, decoded (keys whose value is not text are left out); None when it does not
    exist. kube.ApiError when the API server refuses (403: the operator may not read it)."""
    body = await kube.run(kube.get, "v1", "Secret", namespace, name)
    if body is None:
        return None
    out: dict[str, str] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out
