"""The gateway: what browsers talk to (REST under ``/api``, Socket.IO signaling)."""
