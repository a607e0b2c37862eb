"""Versions stamped on every message and heartbeat."""

from importlib.metadata import PackageNotFoundError, version

#: Bumped when a message changes incompatibly (a field removed or its meaning changed).
#: Adding an optional field does not bump it: decoders ignore fields they do not know.
SCHEMA_VERSION = 1


def _package_version() -> str:
    try:
        return version("meeshy-calls")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


PACKAGE_VERSION = _package_version()
