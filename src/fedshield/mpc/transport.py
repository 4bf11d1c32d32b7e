"""Length-prefixed binary frames over TCP: a small JSON header plus at most one raw numpy buffer.

Frame = 8-byte little-endian header length · UTF-8 JSON header · payload. The header names the message
(``"t"``) and, when an array follows, its ``dtype`` (one of a fixed list) and ``shape``; the payload is the
array's bytes, received straight into a preallocated array. Nothing is unpickled. Every receive honours the
channel's timeout, and every failure is raised as :class:`ChannelError` naming the peer and what was awaited.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from typing import Any

import numpy as np

__all__ = ["Channel", "ChannelError", "connect", "parse_address"]

_DTYPES = {"uint64": np.uint64, "int64": np.int64, "float64": np.float64, "float32": np.float32, "uint8": np.uint8}
_MAX_HEADER = 1 << 20


class ChannelError(RuntimeError):
    """The peer closed the connection, timed out or sent a malformed frame."""


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` → (host, port); raise ValueError naming the text otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"address {text!r} is invalid; expected 'host:port' with a port in 0..65535")
    return host, int(port)


def connect(address: str, peer_name: str, timeout: float, hello: dict[str, Any]) -> "Channel":
    """Dial ``address`` and introduce ourselves with a ``hello`` frame."""
    host, port = parse_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ChannelError(f"cannot connect to {peer_name} at {address}: {exc}") from None
    ch = Channel(sock, peer_name, timeout)
    ch.send({"t": "hello", **hello})
    return ch


class Channel:
    """One TCP connection to a named peer, counting the bytes sent."""

    def __init__(self, sock: socket.socket, peer_name: str, timeout: float):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        self.sock = sock
        self.peer = peer_name
        self.bytes_sent = 0
        self._send_lock = threading.Lock()

    def set_timeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    # -------------------------------------------------------------------------------------------- send

    def send(self, header: dict[str, Any], array: np.ndarray | None = None) -> None:
        header = dict(header)
        if array is not None:
            array = np.ascontiguousarray(array)
            name = array.dtype.name
            if name not in _DTYPES:
                raise TypeError(f"cannot send dtype {name}")
            header["dtype"], header["shape"] = name, list(array.shape)
        raw = json.dumps(header).encode()
        with self._send_lock:
            try:
                self.sock.sendall(struct.pack("<Q", len(raw)) + raw)
                if array is not None and array.nbytes:
                    self.sock.sendall(memoryview(array).cast("B"))
            except (OSError, socket.timeout) as exc:
                raise ChannelError(f"sending {header.get('t')!r} to {self.peer} failed: {exc}") from None
        self.bytes_sent += 8 + len(raw) + (array.nbytes if array is not None else 0)

    # -------------------------------------------------------------------------------------------- receive

    def _recv_into(self, view: memoryview, what: str) -> None:
        got = 0
        while got < len(view):
            try:
                k = self.sock.recv_into(view[got:])
            except socket.timeout:
                raise ChannelError(f"{self.peer} did not answer within {self.sock.gettimeout()} s "
                                   f"(waiting for {what})") from None
            except OSError as exc:
                raise ChannelError(f"connection to {self.peer} failed while waiting for {what}: {exc}") from None
            if k == 0:
                raise ChannelError(f"{self.peer} closed the connection while we waited for {what}")
            got += k

    def recv(self, expect: str | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
        """Next frame as (header, array or None); with ``expect``, a frame of another type is an error.

        A frame of type ``"error"`` from the peer is raised as :class:`ChannelError` with its message.
        """
        what = repr(expect) if expect else "a message"
        lenbuf = bytearray(8)
        self._recv_into(memoryview(lenbuf), what)
        (hlen,) = struct.unpack("<Q", lenbuf)
        if hlen > _MAX_HEADER:
            raise ChannelError(f"{self.peer} sent a malformed frame (header of {hlen} bytes)")
        raw = bytearray(hlen)
        self._recv_into(memoryview(raw), what)
        try:
            header = json.loads(raw)
        except ValueError:
            raise ChannelError(f"{self.peer} sent a malformed frame header") from None
        array = None
        if "dtype" in header:
            if header["dtype"] not in _DTYPES:
                raise ChannelError(f"{self.peer} sent an array of unsupported dtype {header['dtype']!r}")
            array = np.empty(tuple(int(s) for s in header["shape"]), dtype=_DTYPES[header["dtype"]])
            if array.nbytes:
                self._recv_into(memoryview(array).cast("B"), what)
        if header.get("t") == "error":
            raise ChannelError(f"{self.peer} reported: {header.get('message')}")
        if expect is not None and header.get("t") != expect:
            raise ChannelError(f"{self.peer} sent {header.get('t')!r} while we waited for {what}")
        return header, array

    def recv_array(self, expect: str) -> np.ndarray:
        header, array = self.recv(expect)
        if array is None:
            raise ChannelError(f"{self.peer} sent {expect!r} without data")
        return array

    def exchange(self, tag: str, array: np.ndarray) -> np.ndarray:
        """Send ``array`` and receive the peer's array of the same tag, concurrently (no deadlock on big data)."""
        err: list[BaseException] = []

        def _send() -> None:
            try:
                self.send({"t": tag}, array)
            except BaseException as exc:  # reported after the receive
                err.append(exc)

        if array.nbytes > 1 << 16:
            th = threading.Thread(target=_send, daemon=True)
            th.start()
            other = self.recv_array(tag)
            th.join()
        else:
            _send()
            other = self.recv_array(tag)
        if err:
            raise err[0]
        if other.shape != array.shape:
            raise ChannelError(f"{self.peer} sent {tag!r} of shape {other.shape}, expected {array.shape}")
        return other

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
