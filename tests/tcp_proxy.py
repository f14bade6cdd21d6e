"""A TCP proxy on loopback whose link the fault tests cut and heal."""

from __future__ import annotations

import socket
import struct
import threading

from isthmus.coordinator.etcd import free_port


class Proxy:
    """A TCP proxy on loopback whose link can be cut and healed (both directions, all connections)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.heal()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def heal(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        ls, self._listener = self._listener, None
        # Wake the thread blocked in accept(): closing alone leaves the kernel socket listening until accept()
        # returns, and a client reconnecting at once would get through the cut.
        try:
            ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        ls.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                # Reset both legs (linger 0: RST, not FIN) so both ends see the cut at once.
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            if ls is not self._listener:  # accepted as the link was cut
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._serve, args=(client, server), daemon=True).start()

    def _serve(self, client: socket.socket, server: socket.socket) -> None:
        upstream = threading.Thread(target=self._pump, args=(client, server), daemon=True)
        upstream.start()
        self._pump(server, client)
        upstream.join(10)
        with self._lock:
            for s in (client, server):
                if s in self._conns:
                    self._conns.remove(s)
                s.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)  # pass the end of this direction on
        except OSError:
            pass
