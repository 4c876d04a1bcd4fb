"""What the metric exporters (``ccxt_breaker.prometheus``, ``ccxt_breaker.otel``) share.

Neither touches the hot path: an exporter keeps the exchanges it was given, with their
labels, and reads ``circuit_breakers.snapshot()`` only when metrics are collected.  This
module imports neither prometheus-client nor OpenTelemetry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._registry import BreakerRegistry

__all__ = [
    "DEFAULT_ACCOUNT",
    "OUTCOMES",
    "STATES",
    "TRANSITIONS",
    "Source",
    "Sources",
    "source",
]

STATES = ("closed", "open", "half_open")
# the `outcome` label, and the snapshot key it counts
OUTCOMES = (
    ("success", "successes"),
    ("failure", "failures"),
    ("neutral", "neutral"),
    ("rejected", "rejected"),
)
# Every (from_state, to_state) pair, exported from 0 before it first happens: a series
# that appears at 1 is invisible to rate() and increase().  (reset() of a closed circuit
# and force_open() of an open one are transitions too: closed -> closed, open -> open.)
TRANSITIONS = tuple((old, new) for old in STATES for new in STATES)
DEFAULT_ACCOUNT = "default"


class Source:
    """One exchange given to an exporter: its labels, and its breakers read on demand."""

    __slots__ = ("account", "exchange", "exchange_id")

    def __init__(self, exchange: Any, exchange_id: str, account: str) -> None:
        self.exchange = exchange
        self.exchange_id = exchange_id
        self.account = account

    def __repr__(self) -> str:
        return f"{self.exchange_id} account {self.account!r}"

    def breakers(self) -> BreakerRegistry | None:
        """The exchange's breakers; ``None`` for an exchange without the hook."""
        breakers: BreakerRegistry | None = getattr(self.exchange, "circuit_breakers", None)
        return breakers

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{group: snapshot}`` of the exchange's breakers; empty when it has none.  Called
        from the scraper's or the reader's thread while the event loop's changes them."""
        breakers = self.breakers()
        return {} if breakers is None else breakers.snapshot()


def source(exchange: Any, account: str | None, caller: str) -> Source:
    """``exchange`` checked, with its labels: ``account`` defaults to the breakers' configured
    ``name``, else ``'default'``, and may not contain a credential of the exchange."""
    breakers = getattr(exchange, "circuit_breakers", None)
    exchange_id = getattr(exchange, "id", None)
    if not (isinstance(exchange_id, str) and callable(getattr(exchange, "fetch2", None))):
        raise TypeError(
            f"{caller}() takes a ccxt exchange (ccxt_breaker.kraken, or one built with the "
            f"circuitBreaker flag after ccxt_breaker.install()), not {type(exchange).__name__}"
        )
    if account is None:  # `name` is set for all of an exchange's breakers, or for none
        name = next((b.name for b in breakers.values()), None) if breakers is not None else None
        account = DEFAULT_ACCOUNT if name is None else name
    elif not isinstance(account, str):
        raise TypeError(f"account must be a str, not {type(account).__name__}")
    elif not account:
        raise ValueError("account must not be empty: it names the exchange in every series")
    from ._hook import _credentials

    if any(secret in account for secret in _credentials(exchange)):
        # the value is not repeated here: it holds a credential
        raise ValueError(
            "account must not contain a credential of the exchange: it is a label of every series"
        )
    return Source(exchange, exchange_id, account)


class Sources:
    """The exchanges given to one target (a Prometheus registry, an OTel meter provider),
    each once, under labels of its own."""

    def __init__(self, added: str, target: str, undo: str) -> None:
        self._lock = threading.Lock()
        self._entries: tuple[Source, ...] = ()
        # for error messages: "registered", "in this CollectorRegistry", "call ... first"
        self._added, self._target, self._undo = added, target, undo

    def __iter__(self) -> Iterator[Source]:
        return iter(self._entries)  # a tuple, replaced whole: safe to read from any thread

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, new: Source) -> None:
        """Add ``new``, unless its exchange, its labels or its breakers are here already."""
        with self._lock:
            shared = new.breakers()
            for old in self._entries:
                if old.exchange is new.exchange:
                    raise ValueError(
                        f"{old} is already {self._added} {self._target}; {self._undo} first"
                    )
                if (old.exchange_id, old.account) == (new.exchange_id, new.account):
                    raise ValueError(
                        f"another exchange is already {self._added} {self._target} as {old}: "
                        "pass account= to tell the two apart"
                    )
                if shared and shared is old.breakers():  # disabled ones share an empty one
                    raise ValueError(
                        f"{new} shares its breakers with {old}, already {self._added} "
                        f"{self._target} (a copy.copy of it?): its counts would show twice"
                    )
            self._entries = (*self._entries, new)

    def remove(self, old: Source) -> bool:
        """Remove ``old``; whether it was here."""
        with self._lock:
            entries = tuple(s for s in self._entries if s is not old)
            found = len(entries) < len(self._entries)
            self._entries = entries
            return found
