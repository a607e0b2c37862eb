"""Apertium APy (Debian's ``apertium-apy`` and pair packages) as a local component.

APy is a Debian program: it runs under the system Python, through
``devstack/apy_loopback.py``, bound to loopback. Its language pairs are the Debian
packages ``tools/bootstrap.sh`` installs into ``/usr/share/apertium/modes``.
"""

import shutil
from pathlib import Path

from devstack.binaries import MissingBinary

#: Where Debian's apertium-* pair packages put their modes.
MODES_DIR = Path("/usr/share/apertium/modes")
_LAUNCHER = Path(__file__).with_name("apy_loopback.py")


def system_python() -> str:
    """The interpreter Debian's ``apertium-apy`` is installed for."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).exists():
            return candidate
    raise MissingBinary("no system python3 for Apertium APy")


def apy_argv(port: int, host: str = "127.0.0.1", modes: Path = MODES_DIR) -> list[str]:
    """The command that runs APy on ``host:port`` with the installed pairs."""
    if not Path("/usr/bin/apertium-apy").exists() and shutil.which("apertium-apy") is None:
        raise MissingBinary("apertium-apy is not installed (run make setup)")
    if not modes.is_dir():
        raise MissingBinary(f"no Apertium language pairs in {modes} (run make setup)")
    return [
        system_python(),
        str(_LAUNCHER),
        "--host",
        host,
        "--port",
        str(port),
        # Pipelines of one pair serve this many requests concurrently before a second
        # is started; a pair's first request starts its pipeline (about 0.1-0.3 s).
        "--max-users-per-pipe",
        "5",
        str(modes),
    ]


#: The environment APy needs (it refuses to start without a UTF-8 locale).
APY_ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
