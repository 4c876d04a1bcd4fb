"""OpenTelemetry metrics of an exchange's breakers: ``instrument(exchange)``.

Needs the ``otel`` extra: ``pip install 'ccxt-breaker[otel]'`` (the API; an SDK or a
distribution of your choice exports).  Observable instruments of the meter
``ccxt_breaker`` read ``circuit_breakers.snapshot()`` in their callbacks, when the reader
collects; a call through a breaker does no more work than without them.

Every data point has the attributes ``exchange`` (the ccxt id), ``account`` and ``group``:

- ``ccxt_breaker.state`` (observable gauge, unit ``1``, attribute ``state``): 1 for the
  current state, 0 for the other two of ``closed``, ``open``, ``half_open``;
- ``ccxt_breaker.calls`` (observable counter, unit ``{call}``, attribute ``outcome``):
  ``success``, ``failure``, ``neutral`` (attempts sent, by verdict) and ``rejected``
  (calls refused unsent);
- ``ccxt_breaker.transitions`` (observable counter, unit ``{transition}``, attributes
  ``from_state``, ``to_state``): every pair, from 0;
- ``ccxt_breaker.retry_after`` (observable gauge, unit ``s``): seconds until a call may
  go, 0 while closed, and no data point while forced open: no time is known (it lasts
  until ``reset()``), and the SDK drops an infinite value.
"""

import threading as _threading
import weakref as _weakref
from collections.abc import Callable as _Callable
from collections.abc import Iterable as _Iterable
from typing import Any as _Any

try:
    from opentelemetry import metrics as _metrics
except ImportError as _error:
    raise ModuleNotFoundError(
        "ccxt_breaker.otel needs opentelemetry-api: pip install 'ccxt-breaker[otel]'",
        name="opentelemetry",
    ) from _error

from . import _export

__all__ = ["instrument"]

_METER = "ccxt_breaker"


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ccxt-breaker")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return None


class _Instruments:
    """The four instruments of one meter provider, over every exchange instrumented there."""

    def __init__(self, provider: _metrics.MeterProvider) -> None:
        self.sources = _export.Sources(
            "instrumented",
            "on this MeterProvider",
            "call the function that instrument() returned to stop it",
        )
        meter = provider.get_meter(_METER, _version())
        meter.create_observable_gauge(
            "ccxt_breaker.state",
            [self._state],
            unit="1",
            description="State of the group's circuit: 1 for the current state, 0 for the others",
        )
        meter.create_observable_counter(
            "ccxt_breaker.calls",
            [self._calls],
            unit="{call}",
            description="Calls through the group's breaker, by outcome: attempts that "
            "succeeded, failed or ended neutral, and calls rejected unsent",
        )
        meter.create_observable_counter(
            "ccxt_breaker.transitions",
            [self._transitions],
            unit="{transition}",
            description="Changes of state of the group's circuit",
        )
        meter.create_observable_gauge(
            "ccxt_breaker.retry_after",
            [self._retry_after],
            unit="s",
            description="Seconds until the group's circuit lets a call through: 0 while "
            "closed, no data point while forced open",
        )

    def _groups(self) -> _Iterable[tuple[dict[str, str], dict[str, _Any]]]:
        for source in self.sources:
            for group, snap in source.snapshot().items():
                base = {"exchange": source.exchange_id, "account": source.account}
                yield {**base, "group": group}, snap

    def _state(self, options: _metrics.CallbackOptions) -> _Iterable[_metrics.Observation]:
        for attributes, snap in self._groups():
            for name in _export.STATES:
                value = 1 if snap["state"] == name else 0
                yield _metrics.Observation(value, {**attributes, "state": name})

    def _calls(self, options: _metrics.CallbackOptions) -> _Iterable[_metrics.Observation]:
        for attributes, snap in self._groups():
            for outcome, key in _export.OUTCOMES:
                yield _metrics.Observation(snap[key], {**attributes, "outcome": outcome})

    def _transitions(self, options: _metrics.CallbackOptions) -> _Iterable[_metrics.Observation]:
        for attributes, snap in self._groups():
            counts = {(t["from_state"], t["to_state"]): t["count"] for t in snap["transitions"]}
            for old, new in _export.TRANSITIONS:
                pair = {"from_state": old, "to_state": new}
                yield _metrics.Observation(counts.get((old, new), 0), {**attributes, **pair})

    def _retry_after(self, options: _metrics.CallbackOptions) -> _Iterable[_metrics.Observation]:
        for attributes, snap in self._groups():
            wait = snap["retry_after"]
            if wait is not None:  # None: forced open, until reset()
                yield _metrics.Observation(wait, attributes)


_LOCK = _threading.Lock()
# Kept as long as the provider lives: OTel has no way to remove an instrument, and a
# second one of the same name would be the first, with its callbacks, not new ones.
_INSTRUMENTS: "_weakref.WeakKeyDictionary[_metrics.MeterProvider, _Instruments]" = (
    _weakref.WeakKeyDictionary()
)
# The global provider, as it was at the first instrument() that used it: a proxy until the
# application sets one, and the proxy's instruments then follow to the real provider.
_GLOBAL: list[_Instruments] = []


def instrument(
    exchange: _Any,
    *,
    account: str | None = None,
    meter_provider: _metrics.MeterProvider | None = None,
) -> _Callable[[], None]:
    """Report the breakers of ``exchange`` through observable instruments of the meter
    ``ccxt_breaker`` of ``meter_provider`` (the global one if ``None``), with the
    attributes ``exchange`` (its ccxt id) and ``account``.

    ``account`` defaults to the breakers' configured ``name``, else ``'default'``; it may
    not contain a credential of the exchange.  Returns a function that stops reporting the
    exchange (a second call does nothing): the instruments stay, as OTel cannot remove one,
    but report no data point for it; until then the provider keeps a reference to the
    exchange.  Any number of exchanges may be instrumented on one provider, each once and
    under attributes of its own: a second ``instrument()`` of the same exchange, of another
    with the same ``exchange`` and ``account``, or of a copy sharing its breakers raises
    ``ValueError``.  An exchange without breakers is accepted and reports nothing.
    """
    source = _export.source(exchange, account, "instrument")
    with _LOCK:
        if meter_provider is None:
            if not _GLOBAL:
                _GLOBAL.append(_instruments(_metrics.get_meter_provider()))
            instruments = _GLOBAL[0]
        else:
            instruments = _instruments(meter_provider)
        instruments.sources.add(source)

    def stop() -> None:
        """Stop reporting the exchange's breakers; a second call does nothing."""
        instruments.sources.remove(source)

    return stop


def _instruments(provider: _metrics.MeterProvider) -> _Instruments:
    instruments = _INSTRUMENTS.get(provider)
    if instruments is None:
        instruments = _INSTRUMENTS[provider] = _Instruments(provider)
    return instruments
