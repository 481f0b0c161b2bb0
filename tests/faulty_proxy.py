"""A TCP proxy on loopback that makes an S3 server flaky: every `every`-th connection
is answered with HTTP 503 (SlowDown) or dropped, the rest are forwarded untouched.
Bounded: it serves only while its context is open, and only 127.0.0.1."""
from __future__ import annotations

import socket
import threading

SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 81\r\n"
             b"Connection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>injected</Message></Error>\n\n\n\n\n\n")


class FaultyProxy:
    def __init__(self, target_port: int, every: int = 3):
        self.target = ("127.0.0.1", target_port)
        self.every = every
        self.connections = 0
        self.faults = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            if self.connections % self.every == 0:
                self.faults += 1
                threading.Thread(target=self._fail, args=(client, self.faults), daemon=True).start()
            else:
                threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    @staticmethod
    def _fail(client: socket.socket, n: int) -> None:
        with client:
            client.settimeout(5)
            try:
                client.recv(65536)  # the request line and headers
                if n % 2:
                    client.sendall(SLOW_DOWN)  # a 5xx the client must retry
                # else: drop the connection without an answer
            except OSError:
                pass

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        client.close()
        upstream.close()
