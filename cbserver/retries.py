"""When to try a failed call-back again: per outcome, with back-off and jitter, in opening hours.

A subscriber may set a rule per outcome as JSON::

    {"visitor_busy": {"max_attempts": 5, "delay_seconds": 120, "backoff": 2, "jitter": 0.2}}

Outcomes without a rule use the subscriber's ``max_attempts`` and ``retry_interval_seconds``
with the default back-off and jitter.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cbserver.hours import OpeningHours

OUTCOME_KINDS = ("visitor_busy", "visitor_no_answer", "no_agent", "failed")
DEFAULT_BACKOFF = 2.0
DEFAULT_JITTER = 0.1
MAX_DELAY = timedelta(days=1)
LIMITS: dict[str, tuple[float, float]] = {
    "max_attempts": (1, 10),
    "delay_seconds": (10, 86400),
    "backoff": (1.0, 10.0),
    "jitter": (0.0, 0.5),
}


class RetryRuleError(ValueError):
    """A retry rule that cannot be used; the message names the outcome and the field."""


def outcome_kind(outcome: str) -> str:
    """The rule an attempt's outcome falls under."""
    return {
        "busy": "visitor_busy",
        "no_answer": "visitor_no_answer",
        "rejected": "visitor_no_answer",
        "no_agent": "no_agent",
    }.get(outcome, "failed")


@dataclass(frozen=True)
class RetryRule:
    max_attempts: int
    delay_seconds: int
    backoff: float = DEFAULT_BACKOFF
    jitter: float = DEFAULT_JITTER

    def delay(self, retry_number: int, chance: random.Random) -> timedelta:
        """The wait before retry ``retry_number`` (1 for the first retry)."""
        base = self.delay_seconds * self.backoff ** max(0, retry_number - 1)
        spread = 1 + self.jitter * chance.uniform(-1.0, 1.0)
        return min(timedelta(seconds=base * spread), MAX_DELAY)


def parse_rules(data: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """Validate a subscriber's retry rules; RetryRuleError says what is wrong."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise RetryRuleError("retry rules: give an object keyed by outcome")
    rules: dict[str, dict[str, float]] = {}
    for kind, rule in data.items():
        if kind not in OUTCOME_KINDS:
            raise RetryRuleError(
                f"retry rules: {kind!r} is not an outcome ({', '.join(OUTCOME_KINDS)})"
            )
        if not isinstance(rule, Mapping):
            raise RetryRuleError(f"retry rules: {kind} must be an object")
        checked: dict[str, float] = {}
        for name, value in rule.items():
            if name not in LIMITS:
                raise RetryRuleError(f"retry rules: {kind}.{name} is unknown ({', '.join(LIMITS)})")
            low, high = LIMITS[name]
            whole = name in ("max_attempts", "delay_seconds")
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (whole and not float(value).is_integer())
                or not low <= value <= high
            ):
                kind_text = "a whole number" if whole else "a number"
                raise RetryRuleError(
                    f"retry rules: {kind}.{name} must be {kind_text} from {low:g} to {high:g}"
                )
            checked[name] = int(value) if whole else float(value)
        rules[kind] = checked
    return rules


@dataclass(frozen=True)
class RetryPolicy:
    default: RetryRule
    rules: Mapping[str, RetryRule]

    @classmethod
    def of(
        cls, max_attempts: int, retry_interval_seconds: int, rules: Mapping[str, Any] | None
    ) -> RetryPolicy:
        default = RetryRule(max_attempts, retry_interval_seconds)
        parsed = {
            kind: RetryRule(
                int(rule.get("max_attempts", max_attempts)),
                int(rule.get("delay_seconds", retry_interval_seconds)),
                float(rule.get("backoff", DEFAULT_BACKOFF)),
                float(rule.get("jitter", DEFAULT_JITTER)),
            )
            for kind, rule in parse_rules(rules).items()
        }
        return cls(default, parsed)

    def rule_for(self, outcome: str) -> RetryRule:
        return self.rules.get(outcome_kind(outcome), self.default)


@dataclass(frozen=True)
class Retry:
    at: datetime
    # True when the retry was moved to the next opening.
    moved: bool


@dataclass(frozen=True)
class GiveUp:
    """No retry: out of attempts (``expired`` False) or past the request's deadline."""

    expired: bool
    reason: str


def plan_retry(
    policy: RetryPolicy,
    outcome: str,
    attempts_made: int,
    now: datetime,
    hours: OpeningHours,
    deadline: datetime | None,
    chance: random.Random,
) -> Retry | GiveUp:
    """What follows a failed attempt: the time of the next one, or why there is none."""
    rule = policy.rule_for(outcome)
    if attempts_made >= rule.max_attempts:
        return GiveUp(False, f"attempt {attempts_made} {outcome}; no attempts left")
    wanted = now + rule.delay(attempts_made, chance)
    at = hours.next_opening(wanted)
    if at is None or (deadline is not None and at >= deadline):
        return GiveUp(True, f"attempt {attempts_made} {outcome}; no time left before the deadline")
    return Retry(at, moved=at != wanted)
