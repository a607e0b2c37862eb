"""A description for every field of the exported JSON Schema.

A field's description comes from, in order: the ``#:`` comment above it in its Struct (or a
base), an entry ``"<Struct>.<field>"`` here, or an entry ``"<field>"`` here (fields that
mean the same thing everywhere). ``tests/unit/test_schema_docs.py`` fails on a field that
has none, so a new field is documented when it is added.
"""

import functools
import inspect
import re
from typing import Any

import msgspec

_COMMENT = re.compile(r"^\s*#:\s?(.*)$")
_FIELD = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*:")

#: Field meanings shared by every message that has the field.
COMMON: dict[str, str] = {
    "type": "The message type tag; selects the member of its family's union.",
    "schema_version": "The schema version the producer wrote (a breaking change bumps it).",
    "call_id": "The call this is about.",
    "event_id": "Unique id of the event (also its JetStream de-duplication id).",
    "occurred_at": "When it happened (RFC 3339, UTC).",
    "seq": "The call's revision: 1, 2, 3 ... per call with no gap; 0 for advisory events.",
    "conversation_id": "The conversation the call belongs to.",
    "conversation_type": "DIRECT (two people, always P2P) or GROUP (up to 50, SFU from 3).",
    "participant_id": "The participant (one person's presence in one call).",
    "user_id": "The messenger user id (absent for guests).",
    "user_ids": "The members concerned.",
    "principal_id": "The user id of a member, or the guest id of a guest.",
    "display_name": "The name shown to the others.",
    "language": "The language (code).",
    "caption_language": "The language this person reads captions in (absent: the one spoken).",
    "kind": "Which kind it is.",
    "node_id": "The media node concerned.",
    "epoch": "The migration epoch: every mode decision of a call gets a higher one.",
    "from_mode": "The call's media path before: p2p or sfu.",
    "to_mode": "The media path the call moves to: p2p or sfu.",
    "mode": "The call's media path: p2p or sfu.",
    "media": "audio or video call.",
    "reason": "Why (see the enumeration).",
    "outcome": "How it ended (see the enumeration).",
    "active_count": "People active in the call after this change.",
    "audio_enabled": "The microphone is on.",
    "video_enabled": "The camera is on.",
    "duration_ms": "How long it took, in milliseconds.",
    "duration_s": "How long it lasted, in seconds.",
    "issued_at": "When the command was issued (RFC 3339, UTC).",
    "command_id": "Unique id of the command.",
    "sent_at": "When it was sent (RFC 3339, UTC).",
    "service_id": "The instance that sent it.",
    "session_id": "The media session (one participant on one media node).",
    "subscription_id": "One subscriber's subscription to one publisher.",
    "publisher_id": "The participant whose media is subscribed to.",
    "sdp": "A Session Description Protocol offer or answer.",
    "is_final": "False while more is to come for the same utterance; true for the last.",
    "utterance_id": "One stretch of speech, cut by voice activity detection.",
    "revision": "Counts up for each new version of the same utterance.",
    "text": "The text.",
    "start_s": "Start of the speech, seconds since the speaker's first audio.",
    "end_s": "End of the speech, seconds since the speaker's first audio.",
    "speech_ended_at": "Wall-clock end of the speech (start of every latency figure).",
    "produced_at": "When this message was produced (RFC 3339, UTC).",
    "timings": "Where the time went before the text existed.",
    "state": "The sender's state.",
    "interval_s": "Seconds until the next report.",
    "cpu_percent": "Process CPU use since the last report (100 = one core).",
    "started_at": "When it started (RFC 3339, UTC).",
    "payload": "The message's bytes.",
    "message": "A human-readable reason (never identities or transcripts).",
    "code": "Machine-readable error code.",
    "event": "The Socket.IO event name.",
    "version": "The software version of the sender.",
    "calls": "Calls served.",
    "participants": "Participants served.",
}

#: Field meanings specific to one message.
SPECIFIC: dict[str, str] = {
    "CallInitiated.initiator": "Who started the call (also the first participant).",
    "CallInitiated.mode": "The media path the call starts on.",
    "CallRinging.ringing_user_ids": "The members being rung.",
    "CallRinging.caller": "Who is calling (what the rung members are shown).",
    "ParticipantResumed.participant": "The participant who resumed, as they are now.",
    "CallRinging.ring_timeout_s": "Seconds before an unanswered ring counts as missed.",
    "ParticipantJoined.participant": "Who joined.",
    "ParticipantLeft.reason": "Why this person left.",
    "CallModeChanged.max_gap_ms": "Longest media interruption any participant reported (ms).",
    "CallModeChanged.duration_ms": "Decision to last acknowledgement, or to the failure (ms).",
    "CallModeChanged.outcome": "completed, failed (still on from_mode) or rolled_back.",
    "CallModeChanged.reason": "Why the selector migrated, or why it did not complete.",
    "CallEnded.reason": "Why the call ended.",
    "CallEnded.duration_s": "From the call becoming active to its end (0 if never active).",
    "CallEnded.ended_by": "The participant who ended it, if someone did.",
    "ActiveSpeakerChanged.participant_id": "The new loudest speaker (absent: nobody speaks).",
    "ActiveSpeakerChanged.previous_participant_id": "The speaker before.",
    "ActiveSpeakerChanged.level_dbov": "Smoothed level (0 loudest, -127 silence).",
    "CallStatusChanged.from_status": "The state before.",
    "CallStatusChanged.to_status": "The state after.",
    "ParticipantDisconnected.grace_s": "Seconds within which the participant may resume.",
    "RingEnded.user_ids": "The members whose ring stopped.",
    "RingEnded.outcome": "accepted, declined, missed or cancelled.",
    "MigrationStarted.deadline_s": "Seconds participants have to bring up the new path.",
    "MigrationStarted.prewarmed": "Participants already held idle SFU sessions.",
    "MigrationStarted.reason": "Why the selector migrates.",
    "TranscriptionChanged.enabled": "Live transcription (and captions) is now on.",
    "TranscriptionChanged.by_participant_id": "Who switched it.",
    "Participant.kind": "user (a member of the conversation) or guest (by share link).",
    "Participant.language": "The language this person speaks (passed to speech recognition).",
    "ParticipantLanguageChanged.language": "The language now spoken.",
    "ServiceHeartbeat.kind": "The kind of service.",
    "ServiceHeartbeat.load": "The instance's load.",
    "ServiceLoad.in_flight": "Work in hand.",
    "ServiceLoad.handled_total": "Work done since start.",
    "ServiceLoad.rss_bytes": "Resident memory of the process.",
    "ServiceLoad.extra": "Kind-specific load figures (sockets, forwarded streams ...).",
    "DeadLetter.original_subject": "Where the message was published.",
    "DeadLetter.failure": "decode (not a valid message) or handler (it kept failing).",
    "DeadLetter.expected_type": "The type the subscriber expected.",
    "DeadLetter.failed_at": "When it was parked (RFC 3339, UTC).",
    "DeadLetter.delivery_attempts": "How many times it was tried.",
    "DeadLetter.payload": "The original bytes, untouched.",
    "DeadLetter.reason": "What went wrong.",
    "DeadLetter.service_id": "The subscriber that parked it.",
    "OpenSession.transcription": "Tap this participant's audio for transcription.",
    "OpenSession.language": "The language this participant speaks.",
    "SubscriptionOffer.kinds": "The media kinds the offer carries.",
    "MediaNodeHeartbeat.capacity": "Participants this node accepts at most.",
    "MediaNodeHeartbeat.free": "Participants it can still take.",
    "MediaNodeHeartbeat.published_tracks": "Tracks published to it.",
    "MediaNodeHeartbeat.forwarded_streams": "Streams it forwards (publisher tracks x subscribers).",
    "MediaNodeHeartbeat.cpu_count": "CPU cores of its host.",
    "MediaNodeHeartbeat.frames_forwarded_total": "Frames forwarded since start.",
    "MediaNodeHeartbeat.frames_dropped_total": "Frames dropped since start (slow subscribers).",
    "MediaNodeHeartbeat.keyframe_requests_total": "Keyframe requests sent to publishers.",
    "MediaNodeHeartbeat.tap_dropped_total": "Audio packets the transcription tap dropped.",
    "AudioChunk.sequence": "Counts the chunks of one utterance from 0.",
    "AudioChunk.sample_rate": "Samples per second of pcm.",
    "AudioChunk.vad": "The voice activity detector that cut it.",
    "AudioChunk.pcm": "16-bit little-endian mono PCM (base64 in JSON).",
    "AudioChunk.started_at": "Wall-clock start of the chunk's audio.",
    "TranscriptSegment.source": "server (a transcriber) or client (the speaker's browser).",
    "TranscriptSegment.text": "What was said, in the language spoken.",
    "Caption.text": "The utterance in this caption's language.",
    "Caption.source_text": "The utterance as spoken.",
    "Caption.translated": "False when text is the original (see untranslated_reason).",
    "Caption.untranslated_reason": "Why the original text is shown.",
    "Caption.translation_ms": "Time the translator took (ms).",
    "SegmentTimings.vad_wait_ms": "End of speech to the chunk leaving the media node (ms).",
    "SegmentTimings.queue_ms": "Chunk leaving the media node to a transcriber starting (ms).",
    "SegmentTimings.transcription_ms": "Speech recognition itself (ms).",
    "SocketDelivery.payload": "The event's JSON payload.",
    "SocketDelivery.participant_id": "Only this participant's sockets (absent: all of them).",
    "SocketDelivery.call_id": "The call the event belongs to, if any.",
    "Caption.speaker_participant_id": "The participant who spoke.",
    "Caption.source_language": "The language spoken.",
}


@functools.cache
def source_docs(cls: type) -> dict[str, str]:
    """``#:`` comments above the fields of ``cls`` and its bases (the nearest wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            comment = _COMMENT.match(line)
            if comment:
                pending.append(comment.group(1).strip())
                continue
            field = _FIELD.match(line)
            if field and pending:
                docs[field.group(1)] = " ".join(pending)
            pending = []
    return docs


def describe(struct: type[msgspec.Struct], field: str) -> str | None:
    """The description of one field, or ``None`` if nobody wrote one."""
    return (
        source_docs(struct).get(field)
        or SPECIFIC.get(f"{struct.__name__}.{field}")
        or COMMON.get(field)
    )


def document(components: dict[str, Any], types: dict[str, type[msgspec.Struct]]) -> None:
    """Give every property of ``components`` (the schema's ``$defs``) its description.

    A type's own description (an id pattern, a language code) is kept after the field's.
    """
    for name, schema in components.items():
        struct = types.get(name)
        if struct is None:
            continue
        for field, prop in schema.get("properties", {}).items():
            text = describe(struct, field)
            if text is None:
                continue
            own = prop.get("description")
            prop["description"] = f"{text} ({own})" if own and own != text else text


def struct_types(roots: list[type[msgspec.Struct]]) -> dict[str, type[msgspec.Struct]]:
    """Every Struct reachable from ``roots`` (nested fields included), by name."""
    found: dict[str, type[msgspec.Struct]] = {}

    def visit(info: Any) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls.__name__ in found:
                return
            found[info.cls.__name__] = info.cls
            for f in info.fields:
                visit(f.type)
            return
        for attr in ("types", "item_type", "key_type", "value_type", "item_types"):
            inner = getattr(info, attr, None)
            if inner is None:
                continue
            for t in inner if isinstance(inner, tuple) else (inner,):
                visit(t)

    for root in roots:
        visit(msgspec.inspect.type_info(root))
    return found
