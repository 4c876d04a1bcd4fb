"""The breaker's exception, and the one place that judges exceptions.

``CircuitOpenError`` sits inside ccxt's own hierarchy, so handlers that bots already
have keep catching it::

    ccxt.BaseError
    ├── ccxt.ExchangeError ........... business errors: the exchange answered (success)
    └── ccxt.OperationFailed
        ├── ccxt.NetworkError ........ outages and limits (failure)
        │   ├── ccxt.ExchangeNotAvailable
        │   │   └── CircuitOpenError . no request was sent: safe to retry, even an order
        │   ├── ccxt.RequestTimeout, ccxt.DDoSProtection, ccxt.RateLimitExceeded
        │   └── ccxt.InvalidNonce .... neutral: a client-side clock problem
        └── ccxt.BadResponse ......... failure

:func:`verdict` maps any exception to a :class:`Verdict` by ccxt's hierarchy alone; the
ccxt hook adds what only Kraken's messages tell.  The README's verdict table is the
specification of both.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import ccxt

__all__ = ["CircuitOpenError", "Verdict", "label", "rejection", "verdict"]


class Verdict(enum.Enum):
    """What one attempt says about the exchange."""

    SUCCESS = "success"  # it answered: it is up
    FAILURE = "failure"  # it failed or is overloaded
    NEUTRAL = "neutral"  # no evidence either way (cancelled, never sent, a client fault)


_TRANSPORT = (aiohttp.ClientError, OSError, asyncio.TimeoutError)

_Fields = tuple[str, str | None, float | None, dict[str, str] | None, str]
_NamedFields = tuple[str, str | None, float | None, dict[str, str] | None, str, str]


def label(exchange_id: str, name: str | None) -> str:
    """How log lines and messages name an exchange: ``kraken``, or ``kraken[name]``."""
    return f"{exchange_id}[{name}]" if name else exchange_id


class CircuitOpenError(ccxt.ExchangeNotAvailable):  # type: ignore[misc]  # ccxt is untyped
    """A circuit refused a call; no request of that call reached the network.

    ``retry_after`` is the seconds until a probe may go, or ``None`` while the breaker
    is forced open. ``last_error`` summarises the failure that opened it.
    """

    # The fields live in ``args`` and are read through properties, so that a breaker can
    # build a rejection with BaseException.__new__ alone: running a Python __init__ costs
    # about a quarter of a whole rejection.
    # A sixth field, ``name``, is there only when the breakers were given one, so that
    # the five-field ``args`` of an unnamed rejection stay exactly as they always were.
    args: _Fields | _NamedFields

    def __init__(
        self,
        group: str,
        endpoint: str | None = None,
        retry_after: float | None = None,
        last_error: dict[str, str] | None = None,
        exchange_id: str = "kraken",
        name: str | None = None,
    ) -> None:
        fields: _Fields = (group, endpoint, retry_after, last_error, exchange_id)
        self.args = fields if name is None else (*fields, name)

    @property
    def group(self) -> str:
        """The group whose circuit is open."""
        return self.args[0]

    @property
    def endpoint(self) -> str | None:
        """The endpoint that was not sent, or the guarded function's name (``None`` for
        ``async with``)."""
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        """Seconds until a probe may go; ``None`` while the breaker is forced open."""
        return self.args[2]

    @property
    def last_error(self) -> dict[str, str] | None:
        """``{type, message}`` of the failure that opened the circuit, if one did."""
        return self.args[3]

    @property
    def exchange_id(self) -> str:
        """The ccxt id of the exchange whose circuit is open."""
        return self.args[4]

    @property
    def name(self) -> str | None:
        """The ``name`` the breakers were configured with, if any."""
        return self.args[5] if len(self.args) == 6 else None

    # Built on demand: a bot that rejects thousands of calls a second rarely prints them.
    def __str__(self) -> str:
        what = f"{self.endpoint} was not sent" if self.endpoint else "the call was not made"
        when = (
            "it stays open until reset() (forced open)"
            if self.retry_after is None
            else f"retry after {self.retry_after:.3g} s"
        )
        # One line and no response body: bots log this at every refusal (freqtrade logs it
        # as a WARNING, four times per call); the cause is in ``last_error``.
        return (
            f"{label(self.exchange_id, self.name)} circuit {self.group!r} is open: {what}, "
            f"so it is safe to retry; {when}"
        )

    def __repr__(self) -> str:
        return f"CircuitOpenError({self.group!r}, {self.endpoint!r}, {self.retry_after!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args)


# Builds a CircuitOpenError from its fields (five, or six with a name) without running
# __init__ (see ``args``); a partial of a C function, so it adds no Python frame either.
rejection = cast(
    "Callable[[str, str | None, float | None, dict[str, str] | None, str, *tuple[str, ...]], "
    "CircuitOpenError]",
    functools.partial(BaseException.__new__, CircuitOpenError),
)


def verdict(exc: BaseException, responded: bool | None = None) -> Verdict:
    """Judge one attempt that raised ``exc``.

    ``responded`` says whether the exchange sent an HTTP answer to this attempt: ``True``
    or ``False`` when the ccxt hook saw it, ``None`` for a guarded coroutine that cannot
    tell.  An error raised before anything was sent is no evidence about the exchange.
    """
    if not isinstance(exc, Exception) or isinstance(
        exc, (CircuitOpenError, ccxt.InvalidNonce, ccxt.ExchangeClosedByUser)
    ):
        return Verdict.NEUTRAL  # CancelledError and friends are BaseException
    if isinstance(exc, (ccxt.NetworkError, ccxt.BadResponse)):
        return Verdict.FAILURE
    if isinstance(exc, ccxt.BaseError):
        if isinstance(exc.__cause__, _TRANSPORT):
            return Verdict.FAILURE
        return Verdict.NEUTRAL if responded is False else Verdict.SUCCESS
    return Verdict.FAILURE if isinstance(exc, _TRANSPORT) else Verdict.NEUTRAL
