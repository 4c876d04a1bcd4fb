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
import tempfile
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
    """One ``redis-server`` process that a test may stop, pause and start again, reached
    over TCP (``redis://``), a unix socket (``unix://``) or TLS (``rediss://``, with a
    certificate for 127.0.0.1 made here by openssl)."""

    def __init__(self, directory: Path, transport: str = "tcp") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not on PATH")
        self.binary = binary
        self.directory = directory
        self.transport = transport
        self.port = _free_port()
        # a unix socket's path has at most 107 bytes: not under pytest's long tmp_path
        self.socket = Path(tempfile.gettempdir()) / f"ccxt-breaker-redis-{self.port}.sock"
        self.certificate = directory / "redis.crt"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.transport == "unix":
            return f"unix://{self.socket}?db=0"
        if self.transport == "tls":
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.certificate}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _transport_args(self) -> list[str]:
        if self.transport == "unix":  # no TCP at all: only the socket reaches it
            return ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.transport == "tls":
            openssl = shutil.which("openssl")
            if openssl is None:
                unavailable("openssl is not on PATH (it makes the test's certificate)")
            key = self.directory / "redis.key"
            subprocess.run(
                [
                    openssl,
                    *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                    *("-keyout", str(key), "-out", str(self.certificate)),
                    *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                ],
                check=True,
                capture_output=True,
            )
            return [
                *("--port", "0", "--tls-port", str(self.port)),
                *("--tls-cert-file", str(self.certificate), "--tls-key-file", str(key)),
                *("--tls-ca-cert-file", str(self.certificate), "--tls-auth-clients", "no"),
            ]
        return ["--port", str(self.port)]

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                *self._transport_args(),
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

        return redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)
