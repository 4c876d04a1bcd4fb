"""Prometheus metrics of an exchange's breakers: ``register(exchange)``.

Needs the ``prometheus`` extra: ``pip install 'ccxt-breaker[prometheus]'``.  One collector
per registry reads ``circuit_breakers.snapshot()`` of every exchange registered there at
scrape time; a call through a breaker does no more work than without it.

Every series is labelled ``exchange`` (the ccxt id), ``account`` and ``group``:

- ``ccxt_breaker_state`` (gauge, label ``state``): 1 for the current state, 0 for the
  other two of ``closed``, ``open``, ``half_open``;
- ``ccxt_breaker_calls_total`` (counter, label ``outcome``): ``success``, ``failure``,
  ``neutral`` (attempts sent, by verdict) and ``rejected`` (calls refused unsent);
- ``ccxt_breaker_transitions_total`` (counter, labels ``from_state``, ``to_state``): every
  pair, from 0;
- ``ccxt_breaker_retry_after_seconds`` (gauge): seconds until a call may go, 0 while
  closed, ``+Inf`` while forced open (no time is known: it lasts until ``reset()``).
"""

import contextlib as _contextlib
import math as _math
import threading as _threading
import weakref as _weakref
from collections.abc import Callable as _Callable
from collections.abc import Iterable as _Iterable
from typing import Any as _Any

try:
    import prometheus_client as _prometheus_client
except ImportError as _error:
    raise ModuleNotFoundError(
        "ccxt_breaker.prometheus needs prometheus-client: pip install 'ccxt-breaker[prometheus]'",
        name="prometheus_client",
    ) from _error

from prometheus_client.metrics_core import CounterMetricFamily as _Counter
from prometheus_client.metrics_core import GaugeMetricFamily as _Gauge
from prometheus_client.metrics_core import Metric as _Metric
from prometheus_client.registry import Collector as _CollectorBase
from prometheus_client.registry import CollectorRegistry as _CollectorRegistry

from . import _export

__all__ = ["register"]

_LABELS = ["exchange", "account", "group"]


class _Collector(_CollectorBase):
    """The breakers of every exchange registered in one registry, read at scrape time."""

    def __init__(self) -> None:
        self.sources = _export.Sources(
            "registered",
            "in this CollectorRegistry",
            "call the function that register() returned to unregister it",
        )

    def describe(self) -> _Iterable[_Metric]:
        # the registry refuses a second collector (or a metric of its own) of these names
        return self._families()

    def collect(self) -> _Iterable[_Metric]:
        state, calls, transitions, retry_after = families = self._families()
        for source in self.sources:
            for group, snap in source.snapshot().items():
                labels = [source.exchange_id, source.account, group]
                for name in _export.STATES:
                    state.add_metric([*labels, name], 1.0 if snap["state"] == name else 0.0)
                for outcome, key in _export.OUTCOMES:
                    calls.add_metric([*labels, outcome], snap[key])
                counts = {(t["from_state"], t["to_state"]): t["count"] for t in snap["transitions"]}
                for pair in _export.TRANSITIONS:
                    transitions.add_metric([*labels, *pair], counts.get(pair, 0))
                wait = snap["retry_after"]  # None: forced open, until reset()
                retry_after.add_metric(labels, _math.inf if wait is None else wait)
        return families

    @staticmethod
    def _families() -> tuple[_Gauge, _Counter, _Counter, _Gauge]:
        return (
            _Gauge(
                "ccxt_breaker_state",
                "State of the group's circuit: 1 for the current state, 0 for the others",
                labels=[*_LABELS, "state"],
            ),
            _Counter(
                "ccxt_breaker_calls",
                "Calls through the group's breaker, by outcome: attempts that succeeded, "
                "failed or ended neutral, and calls rejected unsent",
                labels=[*_LABELS, "outcome"],
            ),
            _Counter(
                "ccxt_breaker_transitions",
                "Changes of state of the group's circuit",
                labels=[*_LABELS, "from_state", "to_state"],
            ),
            _Gauge(
                "ccxt_breaker_retry_after_seconds",
                "Seconds until the group's circuit lets a call through: 0 while closed, "
                "+Inf while forced open",
                labels=_LABELS,
                unit="seconds",
            ),
        )


_LOCK = _threading.Lock()
_COLLECTORS: "_weakref.WeakKeyDictionary[_CollectorRegistry, _Collector]" = (
    _weakref.WeakKeyDictionary()
)


def register(
    exchange: _Any,
    *,
    account: str | None = None,
    registry: _CollectorRegistry | None = None,
) -> _Callable[[], None]:
    """Export the breakers of ``exchange`` to ``registry`` (prometheus-client's default
    ``REGISTRY`` if ``None``), labelled ``exchange`` (its ccxt id) and ``account``.

    ``account`` defaults to the breakers' configured ``name``, else ``'default'``; it may
    not contain a credential of the exchange.  Returns a function that unregisters the
    exchange again (a second call does nothing); until then the registry keeps a reference
    to the exchange.  Any number of exchanges may be registered in one registry, each once
    and under labels of its own: a second registration of the same exchange, of another
    with the same ``exchange`` and ``account``, or of a copy sharing its breakers raises
    ``ValueError``.  An exchange without breakers registers and exports nothing.

    The exchanges of one registry share one collector, so that each metric family is
    exposed once: unregister through the function returned, not ``registry.unregister``.
    """
    target = _prometheus_client.REGISTRY if registry is None else registry
    source = _export.source(exchange, account, "register")
    with _LOCK:
        collector = _COLLECTORS.get(target)
        if collector is None:
            collector = _Collector()
            collector.sources.add(source)
            target.register(collector)  # first: a clash of names leaves nothing behind
            _COLLECTORS[target] = collector
        else:
            collector.sources.add(source)

    def unregister() -> None:
        """Stop exporting the exchange's breakers; a second call does nothing."""
        with _LOCK:
            if collector.sources.remove(source) and not collector.sources:
                with _contextlib.suppress(KeyError):  # unregistered by hand meanwhile
                    target.unregister(collector)
                if _COLLECTORS.get(target) is collector:
                    del _COLLECTORS[target]

    return unregister
