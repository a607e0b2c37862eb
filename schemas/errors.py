"""Explicit errors of the bus helper; every failure a caller can handle has its own type."""


class BusError(Exception):
    """Base of every error raised by :mod:`schemas.bus`."""


class BusUnavailable(BusError):
    """No NATS server answered before the connection deadline."""


class RequestTimeout(BusError):
    """A request got no reply in time."""

    def __init__(self, subject: str, timeout_s: float) -> None:
        super().__init__(f"no reply on {subject} within {timeout_s:.3g}s")
        self.subject = subject
        self.timeout_s = timeout_s


class NoResponders(BusError):
    """A request was sent to a subject nobody serves."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no responders on {subject}")
        self.subject = subject


class RpcFailed(BusError):
    """The responder answered with a typed :class:`schemas.rpc.RpcError`."""

    def __init__(self, subject: str, code: str, message: str) -> None:
        super().__init__(f"{subject}: {code}: {message}")
        self.subject = subject
        self.code = code
        self.message = message


class BadReply(BusError):
    """A reply that does not decode as the expected type."""


class KvError(BusError):
    """Base of key-value errors."""


class KeyExists(KvError):
    """``create`` of a key that already has a value."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"{bucket}/{key} already exists")
        self.bucket = bucket
        self.key = key


class RevisionMismatch(KvError):
    """Compare-and-set lost: the key changed since the revision the caller read."""

    def __init__(self, bucket: str, key: str, expected: int) -> None:
        super().__init__(f"{bucket}/{key} is no longer at revision {expected}")
        self.bucket = bucket
        self.key = key
        self.expected = expected


class CorruptEntry(KvError):
    """A stored value that does not decode as the bucket's type."""

    def __init__(self, bucket: str, key: str, reason: str) -> None:
        super().__init__(f"{bucket}/{key} does not decode: {reason}")
        self.bucket = bucket
        self.key = key


class SettingsError(ValueError):
    """An environment variable is missing or has a bad value (the value is never echoed)."""
