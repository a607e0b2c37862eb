"""The one source of truth shared by every service.

Every message that crosses NATS is a frozen ``msgspec.Struct`` defined here, every subject
name is built by a function in :mod:`schemas.subjects`, and every service talks to NATS
through :class:`schemas.bus.Bus`. Services import this package and never each other.
"""

from schemas.version import PACKAGE_VERSION, SCHEMA_VERSION

__all__ = ["PACKAGE_VERSION", "SCHEMA_VERSION"]
