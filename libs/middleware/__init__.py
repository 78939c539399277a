"""zapq's Dramatiq middleware: retry policies and deferral, dead-lettering, poison guard, crash recovery."""

from libs.middleware.poison import PoisonGuard
from libs.middleware.recovery import DeadWorkerRecovery
from libs.middleware.retry import DEFAULT_POLICIES, RetryMiddleware, RetryPolicy

__all__ = ["DEFAULT_POLICIES", "DeadWorkerRecovery", "PoisonGuard", "RetryMiddleware", "RetryPolicy"]
