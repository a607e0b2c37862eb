"""Session leases: a session the gateway stops renewing closes itself.

Pure bookkeeping (time passed in); the service sweeps :meth:`LeaseBook.expired` every
``MEDIA_NODE_LEASE_SWEEP_S`` and closes those sessions with reason ``lease_expired``.
"""


class LeaseBook:
    """Deadline and lease length of every open session."""

    def __init__(self) -> None:
        self._deadline: dict[str, float] = {}
        self._lease: dict[str, float] = {}

    def grant(self, session_id: str, lease_s: float, now: float) -> None:
        self._lease[session_id] = lease_s
        self._deadline[session_id] = now + lease_s

    def renew(self, session_id: str, now: float, lease_s: float | None = None) -> bool:
        """Extend a lease; False when the session is unknown (closed or expired)."""
        if session_id not in self._deadline:
            return False
        length = self._lease[session_id] if lease_s is None else lease_s
        self._deadline[session_id] = max(self._deadline[session_id], now + length)
        return True

    def expired(self, now: float) -> list[str]:
        return [sid for sid, deadline in self._deadline.items() if deadline <= now]

    def remaining(self, session_id: str, now: float) -> float | None:
        deadline = self._deadline.get(session_id)
        return None if deadline is None else deadline - now

    def drop(self, session_id: str) -> None:
        self._deadline.pop(session_id, None)
        self._lease.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._deadline)
