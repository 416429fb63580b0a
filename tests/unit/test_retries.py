"""Retry rules: per outcome, back-off with jitter, inside opening hours, before the deadline."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cbserver.hours import OpeningHours
from cbserver.retries import (
    GiveUp,
    Retry,
    RetryPolicy,
    RetryRule,
    RetryRuleError,
    outcome_kind,
    parse_rules,
    plan_retry,
)

ALWAYS = OpeningHours.parse("UTC", None)
# Fridays 09:00-17:00 in Berlin only.
FRIDAYS = OpeningHours.parse("Europe/Berlin", {"weekly": {"fri": ["09:00-17:00"]}})
FRIDAY_NOON = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0


def test_back_off_doubles_each_retry_without_jitter() -> None:
    rule = RetryRule(max_attempts=6, delay_seconds=60, backoff=2.0, jitter=0.0)
    delays = [rule.delay(n, random.Random(1)).total_seconds() for n in range(1, 6)]
    assert delays == [60, 120, 240, 480, 960]


def test_jitter_stays_within_its_share_and_varies() -> None:
    rule = RetryRule(max_attempts=3, delay_seconds=100, backoff=1.0, jitter=0.2)
    chance = random.Random(7)
    delays = {rule.delay(1, chance).total_seconds() for _ in range(200)}
    assert min(delays) >= 80
    assert max(delays) <= 120
    assert len(delays) > 100, "retries of many requests do not fall on the same second"


def test_a_delay_never_exceeds_a_day() -> None:
    rule = RetryRule(max_attempts=10, delay_seconds=86400, backoff=10.0, jitter=0.0)
    assert rule.delay(5, random.Random()) == timedelta(days=1)


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        ("busy", "visitor_busy"),
        ("no_answer", "visitor_no_answer"),
        ("rejected", "visitor_no_answer"),
        ("no_agent", "no_agent"),
        ("failed", "failed"),
        ("anything else", "failed"),
    ],
)
def test_each_outcome_falls_under_a_rule(outcome: str, kind: str) -> None:
    assert outcome_kind(outcome) == kind


def policy(rules: dict[str, Any] | None = None) -> RetryPolicy:
    return RetryPolicy.of(max_attempts=3, retry_interval_seconds=300, rules=rules)


def test_rules_per_outcome_set_attempts_and_delay() -> None:
    rules = {
        "visitor_busy": {"max_attempts": 5, "delay_seconds": 60, "backoff": 1, "jitter": 0},
        "no_agent": {"delay_seconds": 30, "jitter": 0},
    }
    busy = plan_retry(policy(rules), "busy", 4, FRIDAY_NOON, ALWAYS, None, NoJitter())
    assert busy == Retry(FRIDAY_NOON + timedelta(seconds=60), moved=False)
    assert isinstance(
        plan_retry(policy(rules), "busy", 5, FRIDAY_NOON, ALWAYS, None, NoJitter()), GiveUp
    )
    # No rule for no_answer: the subscriber's three attempts, five minutes apart, doubling.
    second = plan_retry(policy(rules), "no_answer", 2, FRIDAY_NOON, ALWAYS, None, NoJitter())
    assert second == Retry(FRIDAY_NOON + timedelta(seconds=600), moved=False)
    given_up = plan_retry(policy(rules), "no_answer", 3, FRIDAY_NOON, ALWAYS, None, NoJitter())
    assert given_up == GiveUp(False, "attempt 3 no_answer; no attempts left")
    no_agent = plan_retry(policy(rules), "no_agent", 1, FRIDAY_NOON, ALWAYS, None, NoJitter())
    assert no_agent == Retry(FRIDAY_NOON + timedelta(seconds=30), moved=False)


def test_a_retry_that_would_fall_after_closing_moves_to_the_next_opening() -> None:
    late_friday = datetime(2026, 11, 27, 15, 58, tzinfo=UTC)  # 16:58 in Berlin
    decision = plan_retry(policy(), "busy", 1, late_friday, FRIDAYS, None, NoJitter())
    assert decision == Retry(datetime(2026, 12, 4, 8, 0, tzinfo=UTC), moved=True), (
        "five minutes later it is closed: next Friday at 09:00 Berlin time"
    )


def test_a_retry_past_the_deadline_expires_the_request() -> None:
    late_friday = datetime(2026, 11, 27, 15, 58, tzinfo=UTC)
    deadline = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    decision = plan_retry(policy(), "no_answer", 1, late_friday, FRIDAYS, deadline, NoJitter())
    assert decision == GiveUp(True, "attempt 1 no_answer; no time left before the deadline")


def test_a_retry_inside_hours_and_before_the_deadline_stays_put() -> None:
    deadline = FRIDAY_NOON + timedelta(hours=2)
    decision = plan_retry(policy(), "busy", 1, FRIDAY_NOON, FRIDAYS, deadline, NoJitter())
    assert decision == Retry(FRIDAY_NOON + timedelta(minutes=5), moved=False)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"voicemail": {}}, "'voicemail' is not an outcome"),
        ({"visitor_busy": {"tries": 3}}, "visitor_busy.tries is unknown"),
        ({"visitor_busy": {"max_attempts": 0}}, "max_attempts must be a whole number from 1 to 10"),
        ({"visitor_busy": {"max_attempts": 2.5}}, "whole number"),
        ({"visitor_busy": {"delay_seconds": True}}, "delay_seconds must be"),
        ({"visitor_busy": {"jitter": 0.9}}, "jitter must be a number from 0 to 0.5"),
        ({"visitor_busy": {"backoff": "2"}}, "backoff must be a number from 1 to 10"),
        ({"visitor_busy": 3}, "visitor_busy must be an object"),
        (["visitor_busy"], "give an object keyed by outcome"),
    ],
)
def test_bad_rules_are_refused_saying_what_is_wrong(rules: Any, message: str) -> None:
    with pytest.raises(RetryRuleError, match=message):
        parse_rules(rules)
