"""A loopback TCP proxy whose link can be cut and restored: a network drop on demand.

Browsers reach a gateway through it; :meth:`TcpProxy.cut` closes every connection and
refuses new ones (accepted, then closed at once, as a dead route looks to a client) until
:meth:`TcpProxy.restore`. Media between browsers does not go through it (it is peer to peer
on loopback), so only the signaling connection drops, as on a flaky Wi-Fi hand-over.
"""

import contextlib
import select
import socket
import threading

from tests.support.nats_server import free_port

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self._listener = socket.create_server((host, self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut = threading.Event()
        self._stop = threading.Event()
        self.accepted = 0
        self.refused = 0
        #: Set when a connection attempt was refused during a cut (a client tried again).
        self.retried = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "TcpProxy":
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                self.refused += 1
                self.retried.set()
                _close(client)
                continue
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for src in readable:
                    data = src.recv(_CHUNK)
                    if not data:
                        return
                    peers[src].sendall(data)
        except OSError:
            return
        finally:
            _close(a)
            _close(b)
            with self._lock, contextlib.suppress(ValueError):
                self._pairs.remove((a, b))

    def cut(self) -> None:
        """Drop every connection now, and every new one until :meth:`restore`."""
        self.retried.clear()
        self._cut.set()
        with self._lock:
            pairs = list(self._pairs)
        for a, b in pairs:
            _close(a)
            _close(b)

    def restore(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        _close(self._listener)
        self._thread.join(5)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
