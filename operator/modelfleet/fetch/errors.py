"""The one error the fetcher raises, and the masking of secrets in everything it says."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping

from modelfleet.fetch.report import Reason

# Environment variables whose values are secrets: they are masked in every line the fetcher prints,
# in every error message and in the report, whatever produced the text (the S3 client included).
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MODELFLEET_HTTP_AUTHORIZATION",
    "MODELFLEET_HTTP_USERNAME",
    "MODELFLEET_HTTP_PASSWORD",
)
MASK = "***"


class FetchError(Exception):
    """A fetch that cannot succeed, with the report's reason and a short message free of secrets."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Redactor:
    """Masks known secret values (and their base64 forms, as in a Basic Authorization header)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        redactor = cls(env.get(name, "") for name in SECRET_ENV)
        user, password = env.get("MODELFLEET_HTTP_USERNAME", ""), env.get("MODELFLEET_HTTP_PASSWORD", "")
        if user or password:
            redactor.add(base64.b64encode(f"{user}:{password}".encode()).decode())
        return redactor

    def add(self, secret: str) -> None:
        secret = secret.strip()
        if len(secret) >= 3:  # masking "a" everywhere would only garble the text
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text
