"""Validation of ``options['circuitBreaker']`` into frozen settings.

Users write ccxt-style keys (camelCase, durations in milliseconds); the rest of the
package reads :class:`BreakerConfig`, whose durations are seconds.  Every problem is
reported at construction, naming the full key path and the offending value.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Protocol, runtime_checkable

__all__ = ["BreakerConfig", "Clock", "Settings", "SharedState", "SystemClock", "parse_settings"]

logger = logging.getLogger("ccxt_breaker")


@runtime_checkable
class Clock(Protocol):
    """Where breakers read time: a monotonic clock for logic, a wall clock for reports."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    """The real clocks of :mod:`time`."""

    __slots__ = ()

    # time's own functions, not wrappers: a rejection reads the clock, and a Python
    # call more is a tenth of its cost
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The policy of one breaker. Durations are seconds; rates are percentages."""

    enabled: bool = True
    failure_threshold: int = 5
    success_threshold: int = 2
    reset_timeout: float = 30.0
    half_open_max_calls: int = 1
    failure_rate_threshold: float | None = None
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 100.0
    sliding_window_type: str = "count"
    sliding_window_size: int = 100
    sliding_window_duration: float = 60.0
    minimum_number_of_calls: int = 20
    reset_timeout_multiplier: float = 2.0
    max_reset_timeout: float = 300.0
    reset_timeout_jitter: float = 0.1
    lockout_duration: float = 900.0
    shadow_mode: bool = False
    history_size: int = 1000
    ws_stale_after: float = 30.0  # a socket silent this long has failed (ws groups only)

    @property
    def uses_window(self) -> bool:
        """Whether outcomes must be kept in a sliding window (rate or slow-call checks)."""
        return self.failure_rate_threshold is not None or self.slow_call_duration is not None


@dataclass(frozen=True, slots=True)
class SharedState:
    """Where breakers share their state: ``"process"`` (the instances of this process) or
    a Redis URL; ``namespace`` ``None`` derives one from the exchange id and the API key."""

    url: str
    namespace: str | None = None
    timeout: float = 0.1  # seconds: the longest a store command may hold a call


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``options['circuitBreaker']`` says, validated."""

    default: BreakerConfig
    groups: Mapping[str, BreakerConfig]
    endpoints: Mapping[str, str]
    clock: Clock = field(default_factory=SystemClock)
    name: str | None = None  # labels log lines, snapshots, events and rejections
    shared_state: SharedState | None = None

    def for_group(self, group: str) -> BreakerConfig:
        return self.groups.get(group, self.default)


# --- the key table -------------------------------------------------------------------

_Check = Callable[[str, Any], Any]


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{path} must be true or false, got {_describe(value)}")
    return value


def _number(path: str, value: Any) -> float:
    # bool is an int subclass; `True` as a threshold is always a mistake
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{path} must be a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{path} must be finite, got {value!r}")
    return float(value)


def _count(path: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{path} must be a whole number, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{path} must be at least {minimum}, got {value!r}")
    return value


def _millis(path: str, value: Any, *, allow_zero: bool = False) -> float:
    ms = _number(path, value)
    if ms < 0 or (ms == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"{path} must be {bound} milliseconds, got {value!r}")
    return ms / 1000.0


def _optional(check: _Check, path: str, value: Any) -> Any:
    return None if value is None else check(path, value)


def _percent(path: str, value: Any) -> float:
    pct = _number(path, value)
    if not 0 < pct <= 100:
        raise ValueError(f"{path} must be a percentage in (0, 100], got {value!r}")
    return pct


def _multiplier(path: str, value: Any) -> float:
    factor = _number(path, value)
    if factor < 1:
        raise ValueError(f"{path} must be 1 or more (1 keeps the open time fixed), got {value!r}")
    return factor


def _fraction(path: str, value: Any) -> float:
    share = _number(path, value)
    if not 0 <= share < 1:
        raise ValueError(f"{path} must be in [0, 1), got {value!r}")
    return share


def _name(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{path} must be a non-empty string, got {_describe(value)}")
    # it is written into log lines: one printable line, or a log could be forged
    if not value.strip() or not value.isprintable():
        raise ValueError(f"{path} must be a non-empty string of printable text, got {value!r}")
    return value


def _window_type(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{path} must be 'count' or 'time', got {_describe(value)}")
    if value not in ("count", "time"):
        raise ValueError(f"{path} must be 'count' or 'time', got {value!r}")
    return value


_STORE_SCHEMES = ("redis://", "rediss://", "unix://")
_SHARED_KEYS = ("url", "namespace", "timeout")


def _store_url(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{path} must be a string, got {_describe(value)}")
    if value != "process" and not value.startswith(_STORE_SCHEMES):
        # the value may hold a Redis password: only its scheme is repeated
        scheme = value.partition(":")[0] if ":" in value else value[:0]
        raise ValueError(
            f"{path} must be 'process' or a URL starting with redis://, rediss:// or "
            f"unix://, got {scheme + ':...' if scheme else 'no URL'}"
        )
    return value


def _shared_state(path: str, value: Any) -> SharedState:
    if isinstance(value, str):
        return SharedState(_store_url(path, value))
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{path} must be 'process', a redis:// URL or a dict, got {_describe(value)}"
        )
    raw = value
    for key in raw:
        if key not in _SHARED_KEYS:
            hidden = (
                "..." if isinstance(raw[key], str) else raw[key]
            )  # maybe a URL, password and all
            raise _unknown(path, key, hidden, list(_SHARED_KEYS))
    if "url" not in raw:
        raise ValueError(f"{path}['url'] is required: 'process' or a redis:// URL")
    namespace = _optional(_name, f"{path}['namespace']", raw.get("namespace"))
    timeout = raw.get("timeout", 100)
    return SharedState(
        _store_url(f"{path}['url']", raw["url"]), namespace, _millis(f"{path}['timeout']", timeout)
    )


# camelCase key -> (BreakerConfig field, check). The order is the README's order.  The
# checks are plain functions, their options bound with partial, so that nothing but this
# table is built when the module is imported.
_KEYS: dict[str, tuple[str, _Check]] = {
    "enabled": ("enabled", _bool),
    "failureThreshold": ("failure_threshold", _count),
    "successThreshold": ("success_threshold", _count),
    "resetTimeout": ("reset_timeout", _millis),
    "halfOpenMaxCalls": ("half_open_max_calls", _count),
    "failureRateThreshold": ("failure_rate_threshold", partial(_optional, _percent)),
    "slowCallDuration": ("slow_call_duration", partial(_optional, _millis)),
    "slowCallRateThreshold": ("slow_call_rate_threshold", _percent),
    "slidingWindowType": ("sliding_window_type", _window_type),
    "slidingWindowSize": ("sliding_window_size", _count),
    "slidingWindowDuration": ("sliding_window_duration", _millis),
    "minimumNumberOfCalls": ("minimum_number_of_calls", _count),
    "resetTimeoutMultiplier": ("reset_timeout_multiplier", _multiplier),
    "maxResetTimeout": ("max_reset_timeout", _millis),
    "resetTimeoutJitter": ("reset_timeout_jitter", _fraction),
    "lockoutDuration": ("lockout_duration", partial(_millis, allow_zero=True)),
    "shadowMode": ("shadow_mode", _bool),
    "historySize": ("history_size", partial(_count, minimum=0)),
    "wsStaleAfter": ("ws_stale_after", _millis),
}
_TOP_ONLY = ("groups", "endpoints", "name", "clock", "sharedState")
_DEFAULTS = BreakerConfig()
_ROOT = "options['circuitBreaker']"
# The keys whose milliseconds are easily mistaken for seconds, and the shortest time
# that any of them plausibly means.
_DURATIONS = (
    "resetTimeout",
    "maxResetTimeout",
    "slowCallDuration",
    "slidingWindowDuration",
    "lockoutDuration",
    "wsStaleAfter",
)
_PLAUSIBLE_MS = 1000
# (key path, value) pairs already warned about in this process
_warned: set[tuple[str, float]] = set()

assert {f for f, _ in _KEYS.values()} == {f.name for f in fields(BreakerConfig)}


def _unknown(path: str, key: object, value: Any, valid: list[str]) -> Exception:
    if not isinstance(key, str):
        return TypeError(f"{path} keys must be strings, got {_describe(key)}")
    hint = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; valid keys: {', '.join(valid)}"
    return ValueError(f"unknown key {path}[{key!r}] = {value!r}{suggestion}")


def _warn_units(path: str, raw: Mapping[Any, Any]) -> None:
    """Warn, once per key path and value, about a duration that looks like seconds."""
    for key in _DURATIONS:
        value = raw.get(key)
        where = f"{path}[{key!r}]"
        # None (off) and lockoutDuration 0 (no lockout) are no durations; values are valid
        if not value or value >= _PLAUSIBLE_MS or (where, value) in _warned:
            continue
        _warned.add((where, value))
        logger.warning(
            "%s = %r means %r ms (durations are milliseconds); for %r seconds, write %s",
            where,
            value,
            value,
            value,
            f"{value * 1000:.12g}",
        )


def _mapping(path: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{path} must be a dict, got {_describe(value)}")
    return value


def _breaker_config(path: str, raw: Mapping[Any, Any], *, top: bool) -> BreakerConfig:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _KEYS:  # a group takes every key but the top-level ones
            raise _unknown(path, key, value, [*_KEYS, *_TOP_ONLY] if top else list(_KEYS))
        name, check = _KEYS[key]
        values[name] = check(f"{path}[{key!r}]", value)
    # An explicit cap below the base open time is a contradiction; a large resetTimeout
    # alone simply lifts the default cap.
    base = values.get("reset_timeout", _DEFAULTS.reset_timeout)
    cap = values.get("max_reset_timeout")
    if cap is None:
        values["max_reset_timeout"] = max(_DEFAULTS.max_reset_timeout, base)
    elif cap < base:
        raise ValueError(
            f"{path}['maxResetTimeout'] must be at least resetTimeout ({base * 1000:g} ms), "
            f"got {raw['maxResetTimeout']!r}"
        )
    config = BreakerConfig(**values)
    if (
        config.sliding_window_type == "count"
        and config.uses_window
        and config.minimum_number_of_calls > config.sliding_window_size
    ):
        raise ValueError(
            f"{path}['minimumNumberOfCalls'] ({config.minimum_number_of_calls}) cannot exceed "
            f"slidingWindowSize ({config.sliding_window_size}): the rate would never be judged"
        )
    return config


def parse_settings(raw: Any, *, endpoints: Mapping[str, str], default_on: bool) -> Settings | None:
    """Validate the ``circuitBreaker`` option; ``None`` means breakers are off.

    ``endpoints`` maps every endpoint path the exchange knows to its default group; it
    decides which names are valid in ``groups`` and ``endpoints``.
    """
    if raw is None:
        raw = default_on
    if isinstance(raw, bool):
        raw = {"enabled": raw}
    top = dict(_mapping(_ROOT, raw))
    groups_raw = _mapping(f"{_ROOT}['groups']", top.pop("groups", {}))
    moves_raw = _mapping(f"{_ROOT}['endpoints']", top.pop("endpoints", {}))
    clock = top.pop("clock", None)
    name = _optional(_name, f"{_ROOT}['name']", top.pop("name", None))
    shared = _optional(_shared_state, f"{_ROOT}['sharedState']", top.pop("sharedState", None))
    # a test clock runs tests in short times on purpose: only real time is warned about
    warn = clock is None
    if clock is None:
        clock = SystemClock()
    elif not isinstance(clock, Clock):
        raise TypeError(
            f"{_ROOT}['clock'] must have monotonic() and time() methods, got {_describe(clock)}"
        )

    default = _breaker_config(_ROOT, top, top=True)
    if warn:
        _warn_units(_ROOT, top)

    moves: dict[str, str] = {}
    for path, group in moves_raw.items():
        where = f"{_ROOT}['endpoints']"
        if path not in endpoints:
            raise _unknown(where, path, group, sorted(endpoints))
        if not isinstance(group, str) or not group:
            raise TypeError(f"{where}[{path!r}] must be a group name, got {_describe(group)}")
        moves[path] = group

    known_groups = sorted({*endpoints.values(), *moves.values()})
    groups: dict[str, BreakerConfig] = {}
    for group, override in groups_raw.items():
        where = f"{_ROOT}['groups']"
        if group not in known_groups:
            raise _unknown(where, group, override, known_groups)
        override = _mapping(f"{where}[{group!r}]", override)
        merged = {**top, **override}
        for key in _TOP_ONLY:
            if key in merged:
                raise ValueError(f"{where}[{group!r}][{key!r}] is only valid at the top level")
        groups[group] = _breaker_config(f"{where}[{group!r}]", merged, top=False)
        if warn:  # only the keys the group writes: the inherited ones were warned about
            _warn_units(f"{where}[{group!r}]", override)
    # validated even when off, so a typo does not wait for the day breakers are turned on
    if not default.enabled:
        return None
    return Settings(
        default=default, groups=groups, endpoints=moves, clock=clock, name=name, shared_state=shared
    )
