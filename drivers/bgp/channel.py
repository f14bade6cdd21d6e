"""The speaker's process and socket, without os-ken: detaching, the unix socket, its clients, each fed whole
JSON lines by a writer thread of its own.

A client that stops reading is dropped (its queue fills) rather than stalling
os-ken's threads, which send events; the speaker's log records go to every
client as ``log`` events.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from isthmus.drivers.bgp.protocol import Event, Request, Response

log = logging.getLogger("isthmus.bgp_speaker")

CLIENT_QUEUE = 10_000  # messages waiting for a client before it is dropped as not reading


class Client:
    """One connection to the socket: whole JSON lines out through a queue and a writer thread."""

    def __init__(self, conn: socket.socket, gone: Callable[[Client], None]) -> None:
        self.conn = conn
        self._gone = gone
        self._out: queue.Queue[bytes | None] = queue.Queue(CLIENT_QUEUE)
        self.closed = False
        threading.Thread(target=self._write, name="speaker-client-writer", daemon=True).start()

    def send(self, msg: Response | Event) -> None:
        if self.closed:
            return
        try:
            self._out.put_nowait(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        except queue.Full:
            self.close()

    def _write(self) -> None:
        while True:
            data = self._out.get()
            if data is None:
                break
            try:
                self.conn.sendall(data)
            except OSError:
                break
        self.closed = True
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self._gone(self)

    def close(self) -> None:
        """Hang up once what is queued is sent (at once if the client stopped reading)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._out.put_nowait(None)
        except queue.Full:
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)


class Clients:
    """Every connected client; events go to all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: set[Client] = set()

    def add(self, conn: socket.socket) -> Client:
        client = Client(conn, self._drop)
        with self._lock:
            self._all.add(client)
        return client

    def _drop(self, client: Client) -> None:
        with self._lock:
            self._all.discard(client)

    def broadcast(self, ev: Event) -> None:
        with self._lock:
            clients = list(self._all)
        for c in clients:
            c.send(ev)


class ClientLog(logging.Handler):
    """The speaker's log records as ``log`` events, so that a connected agent logs them too."""

    def __init__(self, clients: Clients) -> None:
        super().__init__()
        self.clients = clients
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):  # a record logged while sending one
            return
        self._local.busy = True
        try:
            self.clients.broadcast(Event(event="log", level=record.levelname, message=record.getMessage()))
        except Exception:  # noqa: BLE001 (logging must never raise into os-ken)
            pass
        finally:
            self._local.busy = False


def _error_text(exc: BaseException) -> str:
    # os-ken's exceptions carry their text in .message / .desc, str() is often empty.
    for attr in ("message", "desc"):
        text = getattr(exc, attr, None)
        if text:
            return str(text)
    return str(exc) or type(exc).__name__


def check_listen(host: str, port: int) -> str:
    """"" when ``host:port`` can be listened on, else why not (os-ken only logs a failed bind)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host} port {port}: {exc.strerror or exc}"
    return ""


def serve_client(client: Client, handle: Callable[[Request], Any], shutdown: Callable[[], None], stop: threading.Event,
                 ops: threading.Lock) -> None:
    """Answer the requests of one client until it disconnects or a shutdown arrives."""
    try:
        _serve_lines(client, handle, shutdown, stop, ops)
    except OSError:
        pass
    client.close()


def _serve_lines(client: Client, handle: Callable[[Request], Any], shutdown: Callable[[], None], stop: threading.Event,
                 ops: threading.Lock) -> None:
    with client.conn.makefile("rb") as lines:
        for line in lines:
            try:
                req: Request = json.loads(line)
                rid = int(req["id"])
            except (ValueError, KeyError, TypeError):
                log.error("ignoring a line that is not a request: %.200r", line)
                continue
            if req.get("op") == "shutdown":
                log.info("shutdown asked for")
                with ops:
                    shutdown()
                client.send(Response(id=rid, ok=True, result=None))
                stop.set()
                return
            try:
                with ops:
                    resp = Response(id=rid, ok=True, result=handle(req))
            except Exception as exc:  # noqa: BLE001 (os-ken's refusal goes back to the driver)
                resp = Response(id=rid, ok=False, error=_error_text(exc))
            client.send(resp)


def listen_unix(path: str) -> socket.socket:
    """The protocol's socket at ``path`` (0600), replacing a stale file left by a speaker that died."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(8)
    return sock


def detach() -> int:
    """Fork: the parent waits until the child says it is ready and exits with 0 (or the child's exit code);
    returns, in the child, the write end of the pipe to say so on. The child leads a session of its own."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        ready = os.read(r, 1)
        if ready == b"\0":
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    os.close(r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return w


def accept(server: socket.socket, clients: Clients, handle: Callable[[Request], Any], shutdown: Callable[[], None],
           stop: threading.Event, ops: threading.Lock) -> None:
    """Serve every client that connects to ``server``, each in a thread, until ``stop``. ``ops`` serializes
    the requests of all clients; ``shutdown`` answers a shutdown (then ``stop`` is set)."""
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except OSError:
            if stop.is_set():
                return
            time.sleep(0.1)
            continue
        client = clients.add(conn)
        threading.Thread(target=serve_client, args=(client, handle, shutdown, stop, ops), name="speaker-client",
                         daemon=True).start()


class NotificationLevels(logging.Filter):
    """os-ken logs every NOTIFICATION as an ERROR: those we send at info, those we receive at warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR:
            text = str(record.msg)
            if text.startswith("Sent notification"):
                record.levelno, record.levelname = logging.INFO, "INFO"
            elif text.startswith("Received notification"):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
