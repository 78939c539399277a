"""Failure reasons: the WhatsApp rule a failed message broke, as a code the CRM can act on.

A message refused under one of Meta's rules is not a fault of zapq or of the provider: it ends ``failed`` with
``failure_reason`` set, is counted per reason (``zapq stats``, ``zapq_rule_failures_total``), and is neither
dead-lettered nor counted toward the dead-letter alert. Meta's codes map onto reasons here, in one table::

    reason                    Meta codes                     what the CRM can do
    outside_service_window    131047, 470 (zapq refuses it   send an approved template instead
                              itself before calling Meta)
    marketing_limit           131049                         wait ≥ 24 h before marketing this user again
    undeliverable             131026                         check the number; it may not be on WhatsApp
    user_stopped_marketing    131050                         the user stopped marketing messages
    template_rejected         132000 - 132016                fix the template or its parameters
    policy                    471 - 479                      a WhatsApp policy refused it (spam, experiment)
    opted_out                 (zapq: the number is on the company's suppression list)
"""

from __future__ import annotations

OUTSIDE_SERVICE_WINDOW = "outside_service_window"
MARKETING_LIMIT = "marketing_limit"
UNDELIVERABLE = "undeliverable"
USER_STOPPED_MARKETING = "user_stopped_marketing"
TEMPLATE_REJECTED = "template_rejected"
POLICY = "policy"
OPTED_OUT = "opted_out"

#: Meta ``error.code`` → the rule it reports.
RULE_CODES: dict[int, str] = {
    131047: OUTSIDE_SERVICE_WINDOW,
    470: OUTSIDE_SERVICE_WINDOW,
    131049: MARKETING_LIMIT,
    131026: UNDELIVERABLE,
    131050: USER_STOPPED_MARKETING,
}
#: Ranges of codes, for a code not in :data:`RULE_CODES`.
RULE_RANGES: tuple[tuple[range, str], ...] = (
    (range(132000, 132017), TEMPLATE_REJECTED),
    (range(471, 480), POLICY),
)

#: Every reason (the labels of the per-reason counters).
REASONS: tuple[str, ...] = (
    OUTSIDE_SERVICE_WINDOW,
    MARKETING_LIMIT,
    UNDELIVERABLE,
    USER_STOPPED_MARKETING,
    TEMPLATE_REJECTED,
    POLICY,
    OPTED_OUT,
)


def rule_reason(code: int | None) -> str | None:
    """The rule Meta's ``code`` reports, or ``None`` when the code is not a rule (a fault, or no code)."""
    if code is None:
        return None
    reason = RULE_CODES.get(code)
    if reason is not None:
        return reason
    return next((name for codes, name in RULE_RANGES if code in codes), None)
