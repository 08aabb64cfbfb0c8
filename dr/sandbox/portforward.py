"""`pods/<name>/portforward` over a WebSocket (`v4.channel.k8s.io`), as the API server and kubelet serve it.

A client (`kubectl port-forward`, the kubernetes client's `portforward`)
upgrades the request to a WebSocket and names the ports; for port number i
the stream has a data channel 2i and an error channel 2i+1, each opened by a
frame carrying the port number, then binary frames prefixed with their
channel byte. Here the "kubelet" end is a TCP connection to the pod's IP,
which is a loopback address on this host. One WebSocket per client
connection, as `kubectl` does.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import ssl
import struct
from typing import Any, Protocol

PROTOCOL = "v4.channel.k8s.io"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(Protocol):
    headers: Any
    connection: Any
    close_connection: bool

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...

    def send_error(self, code: int, message: str | None = None) -> None: ...


def frame(payload: bytes, opcode: int = 2) -> bytes:
    """A server frame (never masked)."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 1 << 16:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


class _Reader:
    """Client frames (masked) from a socket, reassembled from whatever recv returns."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.buffer = sock, b""

    def feed(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def frames(self) -> list[tuple[int, bytes]]:
        out = []
        while len(self.buffer) >= 2:
            opcode, size, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if size == 126:
                if len(self.buffer) < 4:
                    break
                size, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif size == 127:
                if len(self.buffer) < 10:
                    break
                size, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            masked = self.buffer[1] & 0x80
            end = offset + (4 if masked else 0) + size
            if len(self.buffer) < end:
                break
            payload = self.buffer[end - size : end]
            if masked:
                key = self.buffer[offset : offset + 4]
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            out.append((opcode, payload))
            self.buffer = self.buffer[end:]
        return out


def serve(handler: Handler, pod: dict[str, Any], ports_text: str) -> None:
    key = handler.headers.get("Sec-WebSocket-Key")
    offered = [p.strip() for p in (handler.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    ip = (pod.get("status") or {}).get("podIP")
    try:
        ports = [int(p) for p in ports_text.split(",") if p]
    except ValueError:
        ports = []
    if not key or PROTOCOL not in offered or not ports or not ip:
        handler.send_error(400, "portforward needs a WebSocket upgrade (v4.channel.k8s.io), ports, and a running pod")
        return
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.send_header("Sec-WebSocket-Protocol", PROTOCOL)
    handler.end_headers()
    handler.close_connection = True
    client = handler.connection
    targets: dict[int, socket.socket] = {}
    try:
        for i, port in enumerate(ports):
            client.sendall(frame(bytes([2 * i]) + struct.pack("<H", port)))
            client.sendall(frame(bytes([2 * i + 1]) + struct.pack("<H", port)))
            try:
                targets[i] = socket.create_connection((ip, port), timeout=5)
            except OSError as exc:
                client.sendall(frame(bytes([2 * i + 1]) + f"dial {ip}:{port}: {exc}".encode()))
        _pump(client, targets)
    except (OSError, ssl.SSLError):
        pass
    finally:
        for target in targets.values():
            target.close()


def _pump(client: Any, targets: dict[int, socket.socket]) -> None:
    reader = _Reader(client)
    by_socket = {t: i for i, t in targets.items()}
    while targets:
        pending = isinstance(client, ssl.SSLSocket) and client.pending()
        ready = [client] if pending else select.select([client, *targets.values()], [], [], 30)[0]
        if not ready:
            continue
        for sock in ready:
            if sock is client:
                if not reader.feed():
                    return
                for opcode, payload in reader.frames():
                    if opcode == 8:  # close
                        return
                    if opcode == 2 and payload and payload[0] % 2 == 0 and payload[0] // 2 in targets:
                        targets[payload[0] // 2].sendall(payload[1:])
            else:
                data = sock.recv(65536)
                index = by_socket[sock]
                if not data:  # the pod closed its end: so does this port's stream
                    targets.pop(index).close()
                    continue
                client.sendall(frame(bytes([2 * index]) + data))
