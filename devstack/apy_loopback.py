"""Run Apertium APy bound to one address (APy itself has no option for it and listens on
every interface), for the embedded stack and the tests.

Run it with the system Python, where Debian's ``apertium-apy`` package lives (not the
project's virtual environment)::

    LC_ALL=C.UTF-8 /usr/bin/python3 devstack/apy_loopback.py --host 127.0.0.1 \\
        -p 2737 /usr/share/apertium/modes

Every argument after ``--host ADDRESS`` goes to APy unchanged. This file imports nothing
of ours, so it runs outside the project's environment.
"""

import sys
from typing import Any


def main() -> None:
    args = sys.argv[1:]
    host = "127.0.0.1"
    if args[:1] == ["--host"] and len(args) > 1:
        host, args = args[1], args[2:]

    import tornado.tcpserver

    original = tornado.tcpserver.TCPServer.bind

    def bind(self: Any, port: int, address: str | None = None, *rest: Any, **kw: Any) -> None:
        original(self, port, host, *rest, **kw)

    tornado.tcpserver.TCPServer.bind = bind

    # APy reads sys.argv into a default argument when its module is imported: set it first.
    sys.argv = ["apertium-apy", *args]
    from apertium_apy import apy

    apy.main()


if __name__ == "__main__":
    main()
