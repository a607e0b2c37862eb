"""The media node's contract: what talks to a node, what it answers, what it publishes.

A **session** is one participant in one call on one node. A ``call`` session has two peer
connections, each negotiated once:

- the **uplink** (``publish``): the client offers what it sends (at most one audio and one
  video m-line), the node answers with Opus and VP8 pinned (Opus DTX asked for);
- the **downlink** (``open_downlink`` / ``answer_downlink``): the node offers a fixed set of
  send-only **slots** (``video_slots`` VP8 m-lines, then ``audio_slots`` Opus m-lines, each
  with its own mid and SSRC) and the client answers. The node maps publishers to slots and
  re-maps them as people speak, pin, join and leave, **without renegotiation**: a video slot
  switches to its new publisher at that publisher's next keyframe (the node asks for one),
  an audio slot at the next packet. The client learns who is in which slot from
  :class:`schemas.media_events.SlotsChanged` (its SSRC never changes).

A ``captions`` session is an audio-only uplink whose audio only feeds the transcription
tap: it is never forwarded, never in anyone's slots and has no downlink (P2P calls use it
for server-side captions while their video stays peer-to-peer).

**Which publishers a session receives.** Video slots: the participants the client pinned
(:class:`SetPreferences`, in its order), then the most recent active speakers (last-N),
then the others in the order they joined, up to ``video_tiles`` (default: every video
slot); a publisher already in a slot keeps it while it stays selected. Audio slots: the
loudest current speakers (from the RTP audio-level extension, with hysteresis), never the
session's own. A session never receives itself.

**Forward only what someone receives.** A publisher whose video is in nobody's slot is not
forwarded, and the node publishes :class:`schemas.media_events.VideoDemandChanged`
(``forwarded=False``, after a short hold-down) so its client can stop sending video; it is
told ``forwarded=True`` as soon as someone needs it again.

**Verbs** (request/reply on ``media.rpc.<node_id>.<verb>``; ``verb`` is each request's class
variable):

| verb | request | reply |
|---|---|---|
| ``open_session`` | :class:`OpenSession` | :class:`SessionOpened` |
| ``publish`` | :class:`Publish` (client SDP offer) | :class:`SdpAnswer` |
| ``open_downlink`` | :class:`OpenDownlink` | :class:`DownlinkOffer` (node SDP offer + slots) |
| ``answer_downlink`` | :class:`AnswerDownlink` (client SDP answer) | :class:`MediaAck` |
| ``set_preferences`` | :class:`SetPreferences` | :class:`MediaAck` |
| ``set_transcription`` | :class:`SetTranscription` | :class:`MediaAck` |
| ``renew_leases`` | :class:`RenewLeases` (many sessions) | :class:`LeasesRenewed` |
| ``close_session`` | :class:`CloseSession` | :class:`MediaAck` |

``open_session`` for a (call, participant, purpose) that already has a session on the node
replaces it (the old one is closed with reason ``replaced``). ``publish`` again replaces the
uplink's peer connection, ``open_downlink`` again replaces the downlink's (reconnects:
aiortc has no usable ICE restart); the slot SSRCs of a new downlink are new, announced in
the offer and the next ``SlotsChanged``. ICE candidates are gathered before any SDP is
returned (no trickle). A pre-warmed session (uplink and downlink connected, nothing sent
yet) costs the node almost nothing; when its client starts sending, the node asks for a
keyframe at the first packet and starts forwarding at that keyframe.

**Leases.** Every session has a lease (``lease_s``, from :class:`OpenSession`). A session
whose lease is not renewed in time closes itself (:class:`schemas.media_events.SessionClosed`
with reason ``lease_expired``). A gateway renews every session it holds on a node in one
:class:`RenewLeases` request about every ``lease_s / 3``; the reply lists the ids the node
does not know (closed, expired or never opened) so the gateway can react. Any other request
about a session also renews its lease.

**Errors**: every failure is a typed :class:`schemas.rpc.RpcError`:
``bad_request`` (unusable SDP or request, a verb the session's purpose does not allow),
``not_found`` (no such session, or it closed meanwhile), ``conflict`` (a concurrent request
on the same leg), ``draining`` (the node shuts down: pick another), ``unavailable`` (the
node is full, or an aiortc negotiation step timed out: retry or pick another),
``internal`` (a bug; no detail leaves the node).

**Published by the node**: the events of :mod:`schemas.media_events` on
``media.evt.<call_id>.<name>`` (core NATS; the gateways holding the call's sockets deliver
them); :class:`MediaNodeHeartbeat` on ``media.node.heartbeat`` (load, for placement);
:class:`AudioChunk` on ``audio.chunk.<call_id>.<participant_id>`` (what transcribers eat);
``ActiveSpeakerChanged`` on ``call.evt.<call_id>.active_speaker_changed`` (JetStream, ``seq``
0; see :mod:`schemas.call_events`).
"""

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from schemas.ids import Id, Lang
from schemas.message import Message, utc_now

#: An SDP blob; bounded so a hostile request cannot make the node parse megabytes.
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]

MediaKind = Literal["audio", "video"]

SessionPurpose = Literal["call", "captions"]
"""``call``: uplink and downlink, forwarded. ``captions``: an audio-only uplink feeding the
transcription tap only (never forwarded, no downlink)."""

#: Most slots one downlink may ask for (each is an m-line the browser keeps open).
MAX_VIDEO_SLOTS = 16
MAX_AUDIO_SLOTS = 8

VideoSlots = Annotated[int, msgspec.Meta(ge=0, le=MAX_VIDEO_SLOTS)]
AudioSlots = Annotated[int, msgspec.Meta(ge=0, le=MAX_AUDIO_SLOTS)]
#: Seconds a session lives without a renewal.
LeaseSeconds = Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)]

CloseReason = Literal["left", "lease_expired", "failed", "node_draining", "replaced"]
"""Why a session ended: the client or gateway closed it (``left``), its lease ran out, its
media failed for good, the node is shutting down, or a new session of the same participant
replaced it."""


class MediaRequest(Message, frozen=True, kw_only=True):
    """Fields of every request to a media node."""

    #: The last token of ``media.rpc.<node_id>.<verb>``.
    verb: ClassVar[str] = ""


class SessionRequest(MediaRequest, frozen=True, kw_only=True):
    """A request about a session opened earlier with ``open_session`` (renews its lease)."""

    session_id: Id


class OpenSession(MediaRequest, frozen=True, kw_only=True, tag="media.open_session"):
    """Open a participant's session in a call on this node.

    With ``transcription`` on, the node decodes this participant's microphone, cuts it into
    utterances and publishes them on ``audio.chunk.<call_id>.<participant_id>`` (turn it on
    for at most one session of a participant). ``video_slots``/``audio_slots``: how many
    slots the downlink carries (``None``: the node's defaults, ``MEDIA_NODE_VIDEO_SLOTS``
    and ``MEDIA_NODE_AUDIO_SLOTS``); ignored for ``captions`` sessions.
    """

    verb: ClassVar[str] = "open_session"

    call_id: Id
    participant_id: Id
    purpose: SessionPurpose = "call"
    transcription: bool = False
    #: The language the participant speaks (copied into the audio chunks for transcribers).
    language: Lang = "en"
    lease_s: LeaseSeconds = 30.0
    video_slots: VideoSlots | None = None
    audio_slots: AudioSlots | None = None


class Publish(SessionRequest, frozen=True, kw_only=True, tag="media.publish"):
    """The client's SDP offer for what it sends (at most one audio and one video m-line;
    ``captions`` sessions: audio only). Again on the same session: replaces the uplink."""

    verb: ClassVar[str] = "publish"

    sdp: Sdp


class OpenDownlink(SessionRequest, frozen=True, kw_only=True, tag="media.open_downlink"):
    """Ask for the node's SDP offer of this session's slots (``call`` sessions only).

    Again on the same session: a new downlink peer connection replaces the old one.
    """

    verb: ClassVar[str] = "open_downlink"


class AnswerDownlink(SessionRequest, frozen=True, kw_only=True, tag="media.answer_downlink"):
    """The client's SDP answer to the :class:`DownlinkOffer` it was given last."""

    verb: ClassVar[str] = "answer_downlink"

    sdp: Sdp


class SetPreferences(SessionRequest, frozen=True, kw_only=True, tag="media.set_preferences"):
    """What the client shows: ``pinned`` participants always get a video slot (in this
    order, while they publish video); ``video_tiles`` is how many video tiles the client
    shows (``None``: every video slot); the tiles not pinned follow the active speakers."""

    verb: ClassVar[str] = "set_preferences"

    pinned: Annotated[list[Id], msgspec.Meta(max_length=MAX_VIDEO_SLOTS)] = msgspec.field(
        default_factory=list
    )
    video_tiles: VideoSlots | None = None


class SetTranscription(SessionRequest, frozen=True, kw_only=True, tag="media.set_transcription"):
    """Turn the transcription tap of a session on or off, and say which language its
    participant speaks, without touching its media (no renegotiation, no gap).

    On: the node taps the session's microphone from now on (at once if its uplink is
    published, else from the publish). Off: the utterance in progress is closed (a final
    chunk) and the tap stops. A new ``language`` applies to the next chunk.
    """

    verb: ClassVar[str] = "set_transcription"

    #: Tap this session's audio for transcription from now on.
    enabled: bool
    #: The language the participant speaks (copied into its audio chunks).
    language: Lang = "en"


class RenewLeases(MediaRequest, frozen=True, kw_only=True, tag="media.renew_leases"):
    """Renew the leases of many sessions at once (a gateway sends one per node).

    Each renewed session lives ``lease_s`` more (``None``: its own lease from
    :class:`OpenSession`).
    """

    verb: ClassVar[str] = "renew_leases"

    session_ids: Annotated[list[Id], msgspec.Meta(max_length=5000)]
    lease_s: LeaseSeconds | None = None


class CloseSession(SessionRequest, frozen=True, kw_only=True, tag="media.close_session"):
    """The participant left: stop its media, free its slots everywhere, close both legs."""

    verb: ClassVar[str] = "close_session"

    reason: Literal["left", "failed"] = "left"


AnyMediaRequest = (
    OpenSession
    | Publish
    | OpenDownlink
    | AnswerDownlink
    | SetPreferences
    | SetTranscription
    | RenewLeases
    | CloseSession
)
"""Every request a media node answers."""

MEDIA_REQUEST_TYPES: tuple[type[MediaRequest], ...] = (
    OpenSession,
    Publish,
    OpenDownlink,
    AnswerDownlink,
    SetPreferences,
    SetTranscription,
    RenewLeases,
    CloseSession,
)


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    """One send-only m-line of a downlink, and who is in it.

    ``publisher_id`` is whom the node assigned to the slot; ``showing_id`` whose media the
    slot carries right now. They differ for the few tens of milliseconds a video slot waits
    for the new publisher's keyframe (it keeps showing the previous one meanwhile, so no
    tile goes black), and when the new publisher sends no video yet (pre-warm, paused).
    """

    index: int
    mid: str
    kind: MediaKind
    ssrc: int
    publisher_id: Id | None = None
    showing_id: Id | None = None


class SessionOpened(Message, frozen=True, kw_only=True, tag="media.session_opened"):
    """The session exists; use ``session_id`` in every later request to ``node_id``."""

    session_id: Id
    node_id: Id
    call_id: Id
    participant_id: Id
    purpose: SessionPurpose = "call"
    lease_s: float = 30.0
    video_slots: int = 0
    audio_slots: int = 0
    #: The session this one replaced (the same participant and purpose opened again).
    replaced_session_id: Id | None = None


class SdpAnswer(Message, frozen=True, kw_only=True, tag="media.sdp_answer"):
    """The node's SDP answer to a publish offer (ICE candidates included: no trickle)."""

    session_id: Id
    sdp: Sdp
    #: What the node will receive from this uplink.
    audio: bool = False
    video: bool = False


class DownlinkOffer(Message, frozen=True, kw_only=True, tag="media.downlink_offer"):
    """The node's SDP offer of the session's slots; answer it with ``answer_downlink``.

    ``slots`` lists every m-line in order with its mid, kind and SSRC, and the mapping as of
    ``version`` (the same counter as :class:`schemas.media_events.SlotsChanged`).
    """

    session_id: Id
    sdp: Sdp
    slots: list[Slot]
    version: int


class LeasesRenewed(Message, frozen=True, kw_only=True, tag="media.leases_renewed"):
    """Which sessions were renewed, and which the node does not know (closed or expired)."""

    node_id: Id
    renewed: list[Id]
    unknown: list[Id]


class MediaAck(Message, frozen=True, kw_only=True, tag="media.ack"):
    """The request was applied."""

    session_id: Id


AnyMediaReply = SessionOpened | SdpAnswer | DownlinkOffer | LeasesRenewed | MediaAck
"""Every successful reply of a media node (errors are :class:`schemas.rpc.RpcError`)."""

MEDIA_REPLY_TYPES: tuple[type[Message], ...] = (
    SessionOpened,
    SdpAnswer,
    DownlinkOffer,
    LeasesRenewed,
    MediaAck,
)

MediaNodeState = Literal["ready", "draining"]


class MediaNodeHeartbeat(Message, frozen=True, kw_only=True, tag="media.node_heartbeat"):
    """One media node's load, for placement: pick a ``ready`` node with the most room.

    ``capacity`` is the most participants (sessions) the node accepts; ``free`` what is
    left of it. ``cpu_percent`` is the process's CPU over the last interval (100 = one core).
    """

    node_id: Id
    state: MediaNodeState
    calls: int
    participants: int
    capacity: int
    free: int
    #: Publishers' tracks with a connected uplink (audio and video).
    published_tracks: int
    #: Slot-to-publisher pairs currently forwarded (audio and video).
    forwarded_streams: int
    cpu_percent: float
    cpu_count: int = 1
    #: Video and audio streams currently forwarded (``forwarded_streams`` split by kind).
    forwarded_video_streams: int = 0
    forwarded_audio_streams: int = 0
    #: Video and audio slots of the downlinks open on the node, and how many carry media.
    video_slots: int = 0
    video_slots_filled: int = 0
    audio_slots: int = 0
    #: Publishers whose video somebody receives (the others were told to pause).
    video_publishers_forwarded: int = 0
    #: Sessions whose legs are connected but that send nothing yet (pre-warmed).
    idle_sessions: int = 0
    #: Peer connections (uplinks and downlinks) open, UDP ports the process holds, and
    #: asyncio tasks alive: what must return to its baseline when sessions close.
    peer_connections: int = 0
    udp_ports: int = 0
    tasks: int = 0
    #: RTP packets received from publishers / sent into slots, since the node started.
    packets_received_total: int = 0
    packets_forwarded_total: int = 0
    #: Packets not forwarded: a slot waiting for a keyframe, a full socket, a late packet.
    packets_dropped_total: int = 0
    #: Retransmissions answered from slot histories (subscribers' NACKs).
    retransmissions_total: int = 0
    #: Video frames forwarded into slots, and frames held back waiting for a keyframe.
    frames_forwarded_total: int = 0
    frames_dropped_total: int = 0
    #: Keyframe requests (PLIs) sent to publishers.
    keyframe_requests_total: int = 0
    #: Audio packets the transcription tap could not keep up with.
    tap_dropped_total: int = 0
    #: Forwarding errors caught (each resets the slot or stream it hit; should stay 0).
    forwarding_errors_total: int = 0
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
