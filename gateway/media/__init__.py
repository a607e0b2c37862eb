"""The gateway's side of media: SFU sessions for its sockets' participants, kept in step
with the call's mode (:mod:`.plan` says what each participant should have, pure;
:mod:`.sessions` holds the sessions and their leases; :mod:`.coordinator` reconciles;
:mod:`.node_events` delivers what media nodes say to the right socket)."""
