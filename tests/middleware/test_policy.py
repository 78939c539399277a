"""Retry policies as data: delays, cap, jitter, exhaustion and validation (pure unit tests)."""

from __future__ import annotations

import random

import pytest

from libs import contracts
from libs.middleware.policy import DEFAULT_POLICIES, FALLBACK_POLICY, RetryPolicy


def delays(policy: RetryPolicy) -> list[int]:
    """The wait after each failure that is followed by another try."""
    assert policy.attempts is not None
    return [policy.delay_ms(n) for n in range(1, policy.attempts)]


@pytest.mark.parametrize(
    ("queue", "attempts", "expected_ms"),
    [
        (contracts.WEBHOOKS, 3, [2_000, 4_000]),
        (contracts.MESSAGES_URGENT, 5, [3_000, 6_000, 12_000, 24_000]),
        (contracts.MESSAGES, 5, [3_000, 6_000, 12_000, 24_000]),
        (contracts.MESSAGES_LOW, 5, [3_000, 6_000, 12_000, 24_000]),
        (contracts.CAMPAIGNS, 2, [5_000]),
        (contracts.MAINTENANCE, 2, [5_000]),
    ],
)
def test_default_policy_delays(queue: str, attempts: int, expected_ms: list[int]) -> None:
    # Given the design's default policy of a queue
    policy = DEFAULT_POLICIES[queue]
    # Then it allows that many tries in total, waiting the design's delays between them
    assert policy.attempts == attempts
    assert delays(policy) == expected_ms
    assert not policy.exhausted(attempts - 1)
    assert policy.exhausted(attempts)


def test_campaigns_wait_is_fixed() -> None:
    # Given the fixed campaigns policy, when asked for any failure count, then the wait stays 5 s
    assert {DEFAULT_POLICIES[contracts.CAMPAIGNS].delay_ms(n) for n in range(1, 10)} == {5_000}


def test_dead_letter_recorder_retries_forever_with_a_30s_cap() -> None:
    # Given the recorder's policy (it must outlive a Postgres outage)
    policy = DEFAULT_POLICIES[contracts.DEAD_LETTER]
    # Then it doubles from 1 s up to the 30 s cap and is never exhausted
    assert [policy.delay_ms(n) for n in range(1, 9)] == [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
    assert policy.attempts is None
    assert not any(policy.exhausted(n) for n in (1, 10, 1_000, 10**9))


def test_fallback_policy_for_unknown_queues() -> None:
    assert FALLBACK_POLICY.attempts == 3
    assert delays(FALLBACK_POLICY) == [1_000, 2_000]


def test_cap_limits_exponential_growth() -> None:
    # Given an exponential policy capped at 5 s
    policy = RetryPolicy(attempts=10, kind="exponential", base_ms=1_000, cap_ms=5_000)
    # Then the waits grow until the cap and stay there
    assert delays(policy) == [1_000, 2_000, 4_000, 5_000, 5_000, 5_000, 5_000, 5_000, 5_000]


def test_huge_failure_counts_stay_capped() -> None:
    policy = RetryPolicy(attempts=None, kind="exponential", base_ms=1_000, cap_ms=30_000)
    assert policy.delay_ms(10_000) == 30_000


def test_jitter_stays_within_its_fraction_around_the_capped_delay() -> None:
    # Given a policy with ±20 % jitter and a seeded random source
    policy = RetryPolicy(attempts=None, kind="exponential", base_ms=1_000, cap_ms=4_000, jitter=0.2)
    rng = random.Random(7)
    # When many delays are drawn for the 2nd and the (capped) 10th failure
    second = [policy.delay_ms(2, rng) for _ in range(2_000)]
    tenth = [policy.delay_ms(10, rng) for _ in range(2_000)]
    # Then they stay within ±20 % of 2 s and of the 4 s cap, and really spread over that range
    assert min(second) >= 1_600 and max(second) <= 2_400
    assert min(tenth) >= 3_200 and max(tenth) <= 4_800
    assert min(second) < 1_700 and max(second) > 2_300
    assert len(set(second)) > 100


def test_zero_jitter_is_deterministic() -> None:
    policy = RetryPolicy(attempts=3, kind="exponential", base_ms=2_000)
    assert {policy.delay_ms(2, random.Random(seed)) for seed in range(20)} == {4_000}


def test_attempts_none_is_never_exhausted() -> None:
    policy = RetryPolicy(attempts=None, kind="fixed", base_ms=10)
    assert not any(policy.exhausted(n) for n in (0, 1, 2, 100, 10**12))


def test_single_attempt_is_exhausted_after_the_first_failure() -> None:
    policy = RetryPolicy(attempts=1, kind="fixed", base_ms=0)
    assert not policy.exhausted(0)
    assert policy.exhausted(1)


def test_permanent_types_are_data_of_the_policy() -> None:
    policy = RetryPolicy(attempts=3, kind="fixed", base_ms=10, permanent=(KeyError,))
    assert policy.permanent == (KeyError,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0, "kind": "fixed", "base_ms": 10},
        {"attempts": -1, "kind": "exponential", "base_ms": 10},
        {"attempts": 3, "kind": "fixed", "base_ms": -1},
        {"attempts": 3, "kind": "fixed", "base_ms": 10, "jitter": -0.1},
        {"attempts": 3, "kind": "fixed", "base_ms": 10, "jitter": 1.0},
        {"attempts": 3, "kind": "fixed", "base_ms": 10, "cap_ms": -5},
        {"attempts": 3, "kind": "linear", "base_ms": 10},
        {"attempts": 3, "kind": "Fixed", "base_ms": 10},
    ],
)
def test_invalid_policies_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_are_immutable() -> None:
    policy = DEFAULT_POLICIES[contracts.WEBHOOKS]
    with pytest.raises(AttributeError):
        policy.attempts = 10  # type: ignore[misc]
