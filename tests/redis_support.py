"""A real ``redis-server`` for the shared-state tests, on a free port of 127.0.0.1.

``CCXT_BREAKER_REDIS_URL`` names a server to use instead (CI starts one).  Without a
server the tests skip, unless ``CI=true`` or ``CCXT_BREAKER_REDIS=required``, when they
fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = ["RedisServer", "required", "unavailable"]


def required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("CCXT_BREAKER_REDIS") == "required"


def unavailable(reason: str) -> NoReturn:
    if required():
        pytest.fail(f"{reason}, and CI=true or CCXT_BREAKER_REDIS=required", pytrace=False)
    pytest.skip(
        f"{reason}: install Debian's redis-server (CI does, and sets CCXT_BREAKER_REDIS=required "
        "so that these tests cannot skip there)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process that a test may stop, pause and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not on PATH")
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    unavailable("redis-server did not start")
                time.sleep(0.02)

    def kill(self) -> None:
        """Down: the process is gone, and its data with it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        """Slow: the process stops answering, its connections stay open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.kill()

    def client(self) -> Any:
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True
        )
