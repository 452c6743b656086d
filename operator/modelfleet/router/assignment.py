"""Which variant of an experiment answers a request: rules, then a sticky key, then the weights.

1. Rules, in order: the first whose header or cookie matches (name and value exactly; header names
   case-insensitive) names the variant. A rule may send traffic to a variant of weight 0 (a variant
   only testers see); a rule naming a version that is not among the variants is passed over.
2. A sticky key (the value of the experiment's `assignment` header or cookie): weighted rendezvous
   hashing (highest random weight). Each variant scores the key
   `-weight / ln(h(key, version))`, with `h` a hash of the pair in (0, 1); the highest score wins. For a
   given key, `-ln(h) / weight` is an exponential draw of rate `weight`, independent across variants,
   so a variant wins a share of keys equal to its share of the weight. The score depends on the weights
   only through their ratios, which gives what users need:
   - a variant removed (or at weight 0) takes only its own keys with it: every other key's highest
     score is unchanged;
   - when weights change, a key moves from variant a to b only if weight_b / weight_a grew: raising
     one variant and lowering the others in proportion moves keys only to the raised one, about as
     many as its share grew.
   `h` is blake2b of the version and the key, the same in every router process and across restarts
   (never Python's `hash`, which is salted per process). Changing it would move every user.
3. No key: a draw in [0, 1) by weight, as the plain weighted split (`proxy.Route.pick`).

Pure functions of their arguments: the caller reads the headers and cookies and makes the draw.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

MIN_VARIANTS = 2
MAX_VARIANTS = 10
TOTAL_WEIGHT = 100
_HASH_SCALE = float(1 << 64)


class Variant(NamedTuple):
    version: str
    weight: int
    """Share of the traffic in percent, 0..100; the variants' weights add up to 100."""


@dataclass(frozen=True)
class HeaderMatch:
    """A request header `name` (any case) whose value is exactly `value`."""

    name: str
    value: str


@dataclass(frozen=True)
class CookieMatch:
    """A cookie `name` whose value is exactly `value`."""

    name: str
    value: str


@dataclass(frozen=True)
class Rule:
    """Requests that match go to `version`, before any weight is looked at."""

    match: HeaderMatch | CookieMatch
    version: str


@dataclass(frozen=True)
class RequestKeys:
    """What rules and sticky keys read from a request: its headers by lower-case name, its cookies."""

    headers: Mapping[str, str]
    cookies: Mapping[str, str]


@dataclass(frozen=True)
class Assignment:
    """Where a request's sticky key is: the value of a header (`{header: X-User-Id}`) or of a cookie
    (`{cookie: NAME}`); neither means no sticky key."""

    header: str | None = None
    cookie: str | None = None

    def key(self, request: RequestKeys) -> str | None:
        """The request's sticky key; None when it has none (an empty value counts as none)."""
        if self.header is not None:
            value = request.headers.get(self.header.lower())
        elif self.cookie is not None:
            value = request.cookies.get(self.cookie)
        else:
            return None
        return value or None


def parse_cookies(header: str) -> dict[str, str]:
    """The cookies of a `Cookie` header (`a=1; b=2`), the first of a repeated name winning; surrounding
    double quotes are taken off a value, as browsers may send them."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name.strip(), value)
    return cookies


def matches(rule: Rule, request: RequestKeys) -> bool:
    if isinstance(rule.match, HeaderMatch):
        return request.headers.get(rule.match.name.lower()) == rule.match.value
    return request.cookies.get(rule.match.name) == rule.match.value


def unit_hash(key: str, version: str) -> float:
    """A hash of (key, version) in the open interval (0, 1), the same in every process."""
    digest = hashlib.blake2b(
        version.encode() + b"\x00" + key.encode(), digest_size=8, person=b"mf-assign"
    ).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _HASH_SCALE


def sticky(variants: Sequence[Variant], key: str) -> str:
    """The variant for a sticky key, by weighted rendezvous hashing (module docstring). Variants of
    weight 0 never win; at least one variant needs a positive weight."""
    best, best_score = "", -math.inf
    for version, weight in variants:
        if weight <= 0:
            continue
        score = -weight / math.log(unit_hash(key, version))
        if score > best_score:
            best, best_score = version, score
    if not best:
        raise ValueError("no variant has a positive weight")
    return best


def weighted(variants: Sequence[Variant], draw: float) -> str:
    """The variant for a draw in [0, 1), by weight: variant i takes the draws in its slice of [0, 1)."""
    total = sum(max(weight, 0) for _, weight in variants)
    if total <= 0:
        raise ValueError("no variant has a positive weight")
    point = draw * total
    bound = 0
    last = ""
    for version, weight in variants:
        if weight <= 0:
            continue
        bound += weight
        last = version
        if point < bound:
            return version
    return last


def choose(
    variants: Sequence[Variant],
    rules: Sequence[Rule],
    request: RequestKeys,
    key: str | None,
    draw: float,
) -> str:
    """The version that answers a request: the first matching rule's, else the sticky key's, else the
    draw's (module docstring). `key` is the value of the assignment header or cookie, None when the
    request has none (an empty value counts as none)."""
    known = {version for version, _ in variants}
    for rule in rules:
        if rule.version in known and matches(rule, request):
            return rule.version
    if key:
        return sticky(variants, key)
    return weighted(variants, draw)


def validate(variants: Sequence[Variant], rules: Sequence[Rule] = ()) -> list[str]:
    """What is wrong with an experiment's variants and rules, one short message each; empty when they
    can be served: 2..10 variants, versions named and unique, integer weights 0..100 adding up to 100,
    rules naming only versions among the variants."""
    errors: list[str] = []
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        errors.append(f"an experiment has {MIN_VARIANTS} to {MAX_VARIANTS} variants, not {len(variants)}")
    versions = [version for version, _ in variants]
    if any(not version for version in versions):
        errors.append("every variant names a version")
    repeated = sorted({v for v in versions if v and versions.count(v) > 1})
    if repeated:
        errors.append(f"variant versions must be unique: {', '.join(repeated)} repeated")
    whole = True
    for version, weight in variants:
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= TOTAL_WEIGHT:
            errors.append(f"variant {version}: weight must be an integer 0..{TOTAL_WEIGHT}, not {weight!r}")
            whole = False
    if whole and variants and sum(weight for _, weight in variants) != TOTAL_WEIGHT:
        total = sum(weight for _, weight in variants)
        errors.append(f"variant weights must add up to {TOTAL_WEIGHT}, not {total}")
    known = set(versions)
    for i, rule in enumerate(rules):
        if rule.version not in known:
            errors.append(f"rule {i + 1} names version {rule.version}, which is not a variant")
    return errors
