"""The mode selector: call events in, migration decisions out (its own process).

``python -m gateway.selector`` runs one instance; any number may run against the same NATS
(they share one durable consumer of ``CALL_EVENTS``, and every decision is a
compare-and-set on the call's live state, so two instances never double-migrate).
"""
