"""Socket.IO signaling for browsers, one module per concern.

- :mod:`.server`: the Socket.IO server, authentication on connect, dispatch with per-socket
  ordering, rate limits, typed refusals, disconnects;
- :mod:`.requests`: the typed requests clients send and the acknowledgement shape;
- :mod:`.lifecycle`: start, accept/join, decline, leave, end, mute, heartbeats;
- :mod:`.relay`: P2P signals (offer, answer, candidates) to one participant;
- :mod:`.ice_servers`: STUN/TURN servers for a client.

Every client event is answered with an acknowledgement ``{"ok": true, ...}`` or
``{"ok": false, "error": {"code", "message"}}``; a refusal is also emitted as
``call:error {code, message, event}``. Nothing a client sends can raise past a handler.
"""
