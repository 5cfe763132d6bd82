"""The web server of the embedded start: uvicorn on STUDIO_HOST:STUDIO_PORT (127.0.0.1 by default), and also on the
Docker bridge's gateway address when this machine has one, so the SDK in containers of a local Docker target reaches
the API at host.docker.internal without the studio listening on every interface.

    python -m studio.serve --host 127.0.0.1 --port 8000 [--after FILE]

With --after, Django and the URL configuration (every view and API schema: most of the two seconds a start takes)
are loaded at once, and the server makes the application and listens only once FILE exists: the start command starts it while `prepare` migrates and makes FILE when that is
done, so the two overlap and no request ever reaches a database still being migrated.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import struct
import time
from pathlib import Path

import uvicorn

SIOCGIFADDR = 0x8915
# uvicorn's C parser and event loop (the tests' web servers use the same: tests/services.py): about a millisecond less
# per request than h11 and asyncio, which an MLflow script sending a request per metric point feels.
HTTP, LOOP = "httptools", "uvloop"


def interface_address(name: str) -> str | None:
    """The IPv4 address of a network interface (docker0, say), or None when there is no such interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def addresses(host: str, bridge: str | None) -> list[str]:
    """Where to listen: the host given, plus the bridge's gateway unless the host already covers it."""
    found = [host]
    if bridge and host not in ("0.0.0.0", "::", bridge):
        found.append(bridge)
    return found


def preload() -> None:
    """The slow part of loading the application: Django, and the URL configuration (every view and API schema). The
    handler itself is made after, once the static files are collected (WhiteNoise lists them when it is made)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    import django
    from django.urls import get_resolver

    django.setup(set_prefix=False)
    get_resolver().url_patterns  # noqa: B018 - imports every view and builds the API's schemas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--bridge", default="docker0", help="also listen on this interface's address (empty: no)")
    parser.add_argument("--after", type=Path, help="load the application, then listen once this file exists")
    args = parser.parse_args()
    config = uvicorn.Config("studio.asgi:application", timeout_graceful_shutdown=3, log_level="info", http=HTTP,
                            loop=LOOP)
    if args.after is not None:
        preload()
        while not args.after.exists():
            time.sleep(0.02)
    bridge = interface_address(args.bridge) if args.bridge else None
    sockets = [listening_socket(address, args.port) for address in addresses(args.host, bridge)]
    print(f"Web server listening on {', '.join(f'{a}:{args.port}' for a in addresses(args.host, bridge))}", flush=True)
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
