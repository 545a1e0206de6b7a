"""``vistra serve`` as a user starts it: a subprocess on a free port, its answers read with the
standard library's HTTP client (as a plain ``curl`` would send them)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A running ``vistra serve``: ``url``, ``process``, ``log`` (its stderr so far)."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path, key: str | None) -> None:
        self.process, self.port, self.log_file, self.key = process, port, log, key
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def call(
        self, path: str, body: bytes | None = None, content_type: str | None = None,
        headers: dict | None = None, timeout: float = 60.0,
    ) -> tuple[int, dict | str]:  # fmt: skip
        """(status, parsed JSON or text) of a GET (no body) or POST."""
        sent = dict(headers or {})
        if self.key and "X-API-Key" not in sent:
            sent["X-API-Key"] = self.key
        if content_type:
            sent["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, headers=sent,
                                         method="POST" if body is not None else "GET")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def raw(self, head: str, body: bytes = b"") -> tuple[int, dict]:
        """A hand-written HTTP/1.1 request (``head``: request line and headers, without the
        blank line), for what ``urllib`` cannot send: a declared length with no body, chunks;
        the answer is read even if the server stops reading the request early."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as connection:
            key = f"X-API-Key: {self.key}\r\n" if self.key else ""
            with suppress(OSError):
                connection.sendall(f"{head}\r\n{key}Connection: close\r\n\r\n".encode() + body)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])

    def wait_healthy(self, deadline: float = 90.0) -> dict:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"vistra serve ended ({self.process.returncode}):\n{self.log()}"
                )
            try:
                status, body = self.call("/health", timeout=2)
            except OSError:
                status, body = 0, None
            if status == 200:
                return body
            time.sleep(0.2)
        raise AssertionError(f"vistra serve not healthy after {deadline} s:\n{self.log()}")

    def workers(self) -> list[int]:
        """Process ids of the model workers (LitServe spawns them: ``spawn_main`` in their
        command line)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        return found


def start(ckpt: Path, folder: Path, *options: str, key: str | None = None) -> Server:
    """``vistra serve --ckpt CKPT --port P OPTIONS`` started in ``folder`` (``key``: in
    ``VISTRA_API_KEY``), not waited for."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "vistra.cli", "serve", "--ckpt", str(ckpt), "--port", str(port),
             *options], cwd=folder, stdout=stderr, stderr=stderr, start_new_session=True,
            env={**os.environ, "VISTRA_API_KEY": key or ""},
        )  # fmt: skip
    return Server(process, port, log, key)


def stop(server: Server) -> None:
    """The server's whole process group, stopped."""
    with _quiet():
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with _quiet():
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


@contextmanager
def serving(ckpt: Path, folder: Path, *options: str, key: str | None = None):
    """A ``start``-ed server, healthy; stopped afterwards."""
    server = start(ckpt, folder, *options, key=key)
    try:
        server.wait_healthy()
        yield server
    finally:
        stop(server)


def _quiet():
    return suppress(ProcessLookupError)
