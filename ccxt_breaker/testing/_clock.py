"""A clock for tests: time moves only when the test says so."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Monotonic and wall time that advance together, only through :meth:`advance`.

    Pass it as ``options['circuitBreaker']['clock']``, and its bound methods as the
    simulator's ``clock`` and ``wall_clock``, so breakers and simulator share one time.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall_offset + self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds!r})")
        self.now += seconds
