"""What talks to a media node, and what it publishes.

**Request/reply** on ``media.rpc.<node_id>.<verb>`` (``verb`` is each request's
``verb`` class variable). A session is one participant in one call on one node:

1. ``open_session`` -> :class:`SessionOpened` (refused with ``draining`` or ``unavailable``
   when the node is shutting down or full);
2. ``publish``: the client's SDP offer carrying its microphone and camera ->
   :class:`SdpAnswer` (the node pins Opus and VP8);
3. ``subscribe`` to another participant of the same call -> :class:`SubscriptionOffer`, an
   SDP offer from the node carrying that participant's audio and video; the client answers
   with ``answer_subscription``; ``unsubscribe`` stops it;
4. ``close_session`` releases everything the session holds.

Every failure is a typed :class:`schemas.rpc.RpcError` (``bad_request``, ``not_found``,
``conflict``, ``draining``, ``unavailable``, ``internal``).

**Published**: :class:`MediaNodeHeartbeat` on ``media.node.heartbeat`` (load, for placement)
and :class:`AudioChunk` on ``audio.chunk.<call_id>.<participant_id>`` (what transcribers eat).
"""

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from schemas.ids import Id, Lang
from schemas.message import Message, utc_now

#: An SDP blob; bounded so a hostile request cannot make the node parse megabytes.
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]


class MediaRequest(Message, frozen=True, kw_only=True):
    """Fields of every request to a media node."""

    #: The last token of ``media.rpc.<node_id>.<verb>``.
    verb: ClassVar[str] = ""


class SessionRequest(MediaRequest, frozen=True, kw_only=True):
    """A request about a session opened earlier with ``open_session``."""

    session_id: Id


class OpenSession(MediaRequest, frozen=True, kw_only=True, tag="media.open_session"):
    """Open a participant's session in a call on this node (sending and receiving).

    With ``transcription`` on, the node decodes this participant's microphone, cuts it into
    utterances and publishes them on ``audio.chunk.<call_id>.<participant_id>``.
    """

    verb: ClassVar[str] = "open_session"

    call_id: Id
    participant_id: Id
    transcription: bool = False
    #: The language the participant speaks (copied into the audio chunks for transcribers).
    language: Lang = "en"


class Publish(SessionRequest, frozen=True, kw_only=True, tag="media.publish"):
    """The client's SDP offer for what it sends (at most one audio and one video track)."""

    verb: ClassVar[str] = "publish"

    sdp: Sdp


class Subscribe(SessionRequest, frozen=True, kw_only=True, tag="media.subscribe"):
    """Receive the media of ``publisher_id``, another participant of the same call."""

    verb: ClassVar[str] = "subscribe"

    publisher_id: Id


class AnswerSubscription(
    SessionRequest, frozen=True, kw_only=True, tag="media.answer_subscription"
):
    """The client's SDP answer to a :class:`SubscriptionOffer`."""

    verb: ClassVar[str] = "answer_subscription"

    subscription_id: Id
    sdp: Sdp


class Unsubscribe(SessionRequest, frozen=True, kw_only=True, tag="media.unsubscribe"):
    """Stop receiving one subscription's media."""

    verb: ClassVar[str] = "unsubscribe"

    subscription_id: Id


class CloseSession(SessionRequest, frozen=True, kw_only=True, tag="media.close_session"):
    """The participant left: stop its media and every subscription to or from it."""

    verb: ClassVar[str] = "close_session"


AnyMediaRequest = (
    OpenSession | Publish | Subscribe | AnswerSubscription | Unsubscribe | CloseSession
)
"""Every request a media node answers."""

MEDIA_REQUEST_TYPES: tuple[type[MediaRequest], ...] = (
    OpenSession,
    Publish,
    Subscribe,
    AnswerSubscription,
    Unsubscribe,
    CloseSession,
)


class SessionOpened(Message, frozen=True, kw_only=True, tag="media.session_opened"):
    """The session exists; use ``session_id`` in every later request to ``node_id``."""

    session_id: Id
    node_id: Id
    call_id: Id
    participant_id: Id


class SdpAnswer(Message, frozen=True, kw_only=True, tag="media.sdp_answer"):
    """The node's SDP answer to a publish offer (ICE candidates included: no trickle)."""

    session_id: Id
    sdp: Sdp


class SubscriptionOffer(Message, frozen=True, kw_only=True, tag="media.subscription_offer"):
    """The node's SDP offer carrying one publisher's tracks; answer it to start receiving."""

    session_id: Id
    subscription_id: Id
    publisher_id: Id
    sdp: Sdp
    #: The kinds the offer carries, in m-line order.
    kinds: list[Literal["audio", "video"]] = msgspec.field(default_factory=list)


class MediaAck(Message, frozen=True, kw_only=True, tag="media.ack"):
    """The request was applied."""

    session_id: Id


AnyMediaReply = SessionOpened | SdpAnswer | SubscriptionOffer | MediaAck
"""Every successful reply of a media node (errors are :class:`schemas.rpc.RpcError`)."""

MEDIA_REPLY_TYPES: tuple[type[Message], ...] = (
    SessionOpened,
    SdpAnswer,
    SubscriptionOffer,
    MediaAck,
)

MediaNodeState = Literal["ready", "draining"]


class MediaNodeHeartbeat(Message, frozen=True, kw_only=True, tag="media.node_heartbeat"):
    """One media node's load, for placement: pick a ``ready`` node with the most room.

    ``capacity`` is the most participants the node accepts; ``free`` what is left of it.
    ``cpu_percent`` is the process's CPU over the last interval (100 = one core).
    """

    node_id: Id
    state: MediaNodeState
    calls: int
    participants: int
    capacity: int
    free: int
    #: Tracks currently read from publishers.
    published_tracks: int
    #: Publisher-to-subscriber track pairs currently forwarded.
    forwarded_streams: int
    cpu_percent: float
    cpu_count: int = 1
    #: Encoded frames forwarded to subscribers since the node started.
    frames_forwarded_total: int = 0
    #: Frames held back or dropped toward subscribers (slow reader, waiting for a keyframe).
    frames_dropped_total: int = 0
    #: Keyframe requests sent to publishers.
    keyframe_requests_total: int = 0
    #: Audio frames the transcription tap could not keep up with.
    tap_dropped_total: int = 0
    sent_at: datetime = msgspec.field(default_factory=utc_now)
    interval_s: float = 5.0


class AudioChunk(Message, frozen=True, kw_only=True, tag="audio.chunk"):
    """One speaker's utterance so far, as 16-bit little-endian mono PCM.

    An utterance (cut by voice activity detection) is sent as one or more chunks with the
    same ``utterance_id`` and increasing ``sequence``. Each chunk holds the utterance's
    audio **from its start** up to ``end_s`` (so any transcriber can transcribe any chunk
    alone, and a newer chunk supersedes the older ones): non-final chunks while the person
    speaks (about every second), a final one at the first pause. If the speaker resumes
    within the end-of-utterance silence, a continuation follows with the same
    ``utterance_id``, a higher ``sequence``, and replaces it.
    ``start_s``/``end_s`` are seconds since the participant's first audio on this node;
    ``started_at`` is the wall-clock time of ``start_s``; ``speech_end_s`` is where the
    speech itself ended (the chunk may hold a little silence after it).
    """

    call_id: Id
    participant_id: Id
    utterance_id: Id
    sequence: int
    is_final: bool
    start_s: float
    end_s: float
    started_at: datetime
    sample_rate: int = 16000
    language: Lang = "en"
    #: The voice activity detector that cut the utterance ("silero" or "energy").
    vad: str = "silero"
    #: Where the speech itself ended (seconds, like ``end_s``), when the cutter knows it.
    speech_end_s: float | None = None
    pcm: bytes = b""
