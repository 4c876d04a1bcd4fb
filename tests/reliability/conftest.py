"""Hypothesis profiles and the heavy switch of the reliability suite.

``CCXT_BREAKER_HEAVY=1`` selects the heavy profile: at least 10,000 examples for the
model-based test and the 1M-call soak.  The default profile keeps the suite fast.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

HEAVY = os.environ.get("CCXT_BREAKER_HEAVY", "") == "1"

settings.register_profile(
    "ccxt_breaker-default",
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ccxt_breaker-heavy",
    max_examples=10_000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Applied per test, so loading it never changes the profile of tests outside this folder.
PROFILE = settings.get_profile("ccxt_breaker-heavy" if HEAVY else "ccxt_breaker-default")

heavy = pytest.mark.heavy
only_heavy = pytest.mark.skipif(not HEAVY, reason="heavy profile: set CCXT_BREAKER_HEAVY=1")
