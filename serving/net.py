"""Local network helpers for starting servers on free ports."""

import contextlib
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The port is only free when asked: another process may take it before the
    caller binds it. Servers that can should bind port 0 and report theirs.
    """
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
