"""Request and response bodies of the REST API (pydantic, so the OpenAPI schema is exact)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

ID = r"^[A-Za-z0-9_-]{1,128}$"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ErrorBody(Model):
    code: str
    message: str


class ErrorResponse(Model):
    error: ErrorBody


class StartCall(Model):
    conversation_id: str = Field(pattern=ID)
    media: Literal["audio", "video"] = "video"


class ParticipantView(Model):
    participant_id: str
    kind: Literal["user", "guest"]
    user_id: str | None = None
    display_name: str = ""
    language: str = "en"
    audio_enabled: bool = True
    video_enabled: bool = True
    connection: Literal["connected", "reconnecting"] = "connected"


class InviteeView(Model):
    user_id: str
    status: Literal["ringing", "accepted", "declined", "missed", "cancelled"]


class CallView(Model):
    call_id: str
    conversation_id: str
    conversation_type: Literal["DIRECT", "GROUP"]
    status: Literal["initiated", "ringing", "active", "reconnecting", "ended"]
    mode: Literal["p2p", "sfu"]
    media: Literal["audio", "video"]
    initiator_user_id: str
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    participants: list[ParticipantView]
    invitees: list[InviteeView]


class JoinedCall(Model):
    """The call, your participant id, and the secret to resume your place after a drop."""

    call: CallView
    participant_id: str
    resume_token: str


class ConversationMemberBody(Model):
    user_id: str = Field(pattern=ID)
    role: Literal["member", "moderator", "admin"] = "member"


class ConversationBody(Model):
    type: Literal["DIRECT", "GROUP"]
    members: list[ConversationMemberBody] = Field(min_length=1, max_length=500)
    title: str = Field(default="", max_length=200)


class ConversationView(ConversationBody):
    conversation_id: str


class CreateShareLink(Model):
    ttl_s: float | None = Field(default=None, gt=0)
    max_uses: int | None = Field(default=None, ge=1)


class ShareLinkView(Model):
    link_id: str
    conversation_id: str
    token: str
    url: str
    expires_at: float
    max_uses: int | None = None


class RedeemLink(Model):
    link: str = Field(min_length=1, max_length=4096)
    display_name: str = Field(min_length=1, max_length=64)
    language: str = Field(default="en", max_length=16)


class GuestToken(Model):
    token: str
    guest_id: str
    conversation_id: str


class DevTokenRequest(Model):
    user_id: str = Field(pattern=ID)
    display_name: str = Field(default="", max_length=64)
    language: str = Field(default="en", max_length=16)


class DevToken(Model):
    token: str
    user_id: str


class IceServer(Model):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServers(Model):
    ice_servers: list[IceServer]
    ttl_s: float
    expires_at: float | None = None
