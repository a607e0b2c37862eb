"""The gateway service: HTTP and Socket.IO in front (one ASGI app), the bus behind.

Start-up: typed KV handles, the call mirror (KV watch), the event feed (call events ->
socket notices), the sweeper, the REST context and the Socket.IO server, then the listener.
Draining: stop the listener and the sweeper (other gateways keep sweeping), let requests in
hand finish.
"""

import asyncio
import contextlib
import logging
import socket
from typing import Any

import socketio
import uvicorn

from gateway.app import create_app
from gateway.archive.repository import ArchiveRepository
from gateway.call_feeds import CallFeeds, Feed
from gateway.call_store import CallStore
from gateway.calls import CallService
from gateway.captions.router import CaptionRouter
from gateway.context import GatewayContext
from gateway.conversations import Conversations
from gateway.delivery import Delivery
from gateway.event_feed import EventFeed, NoticeProjector
from gateway.guests import Guests
from gateway.health import Readiness
from gateway.http_server import EmbeddedServer
from gateway.media.coordinator import MediaCoordinator
from gateway.media.node_events import NodeEvents
from gateway.media.sessions import MediaSessions
from gateway.presence import PresenceReader, PresenceWriter
from gateway.presence_health import PresenceHealth
from gateway.rate_limit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.sockets.authority import SocketAuthority
from gateway.sockets.captions import CaptionSignaling
from gateway.sockets.ice_servers import IceServers
from gateway.sockets.lifecycle import Lifecycle
from gateway.sockets.media import MediaSignaling
from gateway.sockets.relay import SignalRelay
from gateway.sockets.server import SocketServer
from gateway.timers import CallMirror, Sweeper
from gateway.tokens import TokenService
from schemas import subjects
from schemas.bus import Bus
from schemas.call_commands import AnyCallCommand
from schemas.call_state import (
    ActiveCallClaim,
    CallState,
    ConversationRecord,
    Presence,
    ShareLinkRecord,
)
from schemas.captions import Caption, TranscriptSegment
from schemas.kv import TypedKv
from schemas.logs import get_logger
from schemas.media_events import AnyMediaEvent
from schemas.runtime import Service

log = get_logger("gateway")


class GatewayService(Service[GatewaySettings]):
    kind = "gateway"

    def __init__(self, settings: GatewaySettings, service_id: str) -> None:
        super().__init__(settings, service_id)
        self.readiness = Readiness()
        self.app = create_app(self.readiness, service_id, settings)
        self.tokens = TokenService(settings)
        self.limiter = RateLimiter(settings)
        self.sockets: SocketServer | None = None
        self.authority: SocketAuthority | None = None
        self.relay: SignalRelay | None = None
        self.delivery: Delivery | None = None
        self.mirror: CallMirror | None = None
        self.sweeper: Sweeper | None = None
        self.store: CallStore | None = None
        self.feed: EventFeed | None = None
        self.presence: PresenceWriter | None = None
        self.media: MediaSessions | None = None
        self.coordinator: MediaCoordinator | None = None
        self.feeds: CallFeeds | None = None
        self.captions: CaptionRouter | None = None
        self.caption_signaling: CaptionSignaling | None = None
        self.history: ArchiveRepository | None = None
        self._server: EmbeddedServer | None = None
        self._server_task: asyncio.Task[None] | None = None

    async def _build(self, bus: Bus) -> socketio.ASGIApp:
        settings = self.settings
        calls_kv: TypedKv[CallState] = await bus.kv(subjects.CALLS_BUCKET, CallState)
        claims_kv: TypedKv[ActiveCallClaim] = await bus.kv(
            subjects.CALL_CLAIMS_BUCKET, ActiveCallClaim
        )
        presence_kv: TypedKv[Presence] = await bus.kv(subjects.PRESENCE_BUCKET, Presence)
        conversations = Conversations(
            await bus.kv(subjects.CONVERSATIONS_BUCKET, ConversationRecord)
        )
        if settings.seed_conversations:
            await conversations.seed(settings.seed_conversations)
        guests = Guests(
            settings,
            await bus.kv(subjects.SHARE_LINKS_BUCKET, ShareLinkRecord),
            conversations,
            self.tokens,
        )
        self.mirror = CallMirror(await bus.js.key_value(subjects.CALLS_BUCKET))
        await self.mirror.start()
        self.delivery = Delivery(bus, self._emit)
        self.store = CallStore(bus, calls_kv, claims_kv)
        calls = CallService(settings, self.store, conversations, self.mirror, guests.admit)
        guests.remove_guests = calls.remove_guests_of
        presence_health = PresenceHealth()
        self.presence = PresenceWriter(presence_kv, self.service_id, health=presence_health)
        self.sockets = SocketServer(settings, self.tokens, calls, self.limiter)
        self.sockets.attach(self.delivery)
        self.relay = SignalRelay(settings, calls, self.delivery)
        lifecycle = Lifecycle(settings, calls, self.delivery, self.presence, self._emit)
        self.sockets.register(lifecycle.handlers())
        self.sockets.register(lifecycle.unordered_handlers(), ordered=False)
        self.sockets.register(self.relay.handlers())
        self.sockets.register(IceServers(settings).handlers())
        self.authority = SocketAuthority(
            self.sockets,
            self.delivery,
            calls,
            guests.link_revoked,
            settings.socket_auth_check_interval_s,
        )
        self.authority.start()
        self.media = MediaSessions(
            bus,
            lease_s=settings.media_lease_s,
            rpc_timeout_s=settings.media_rpc_timeout_s,
            video_slots=settings.media_video_slots,
            audio_slots=settings.media_audio_slots,
        )
        self.coordinator = MediaCoordinator(settings, calls, self.store, self.delivery, self.media)
        media_signaling = MediaSignaling(settings, calls, self.media)
        self.sockets.register(media_signaling.handlers())
        self.sockets.register(media_signaling.negotiation_handlers(), ordered=False)
        self.captions = CaptionRouter(self.delivery, self.mirror.get)

        async def publish_segment(segment: TranscriptSegment) -> None:
            await bus.publish(subjects.transcript_segment(segment.call_id), segment)

        self.caption_signaling = CaptionSignaling(
            settings, calls, self.media, self.captions, publish_segment
        )
        self.sockets.register(self.caption_signaling.handlers())
        self.sockets.register(self.caption_signaling.waiting_handlers(), ordered=False)
        self.feeds = CallFeeds(bus)
        self.feeds.add(
            Feed("commands", subjects.call_commands_of, AnyCallCommand, self.coordinator.on_command)
        )
        self.feeds.add(
            Feed(
                "media_events",
                subjects.media_events_of,
                AnyMediaEvent,
                NodeEvents(self.delivery, self.media, self.coordinator),
            )
        )
        self.feeds.add(Feed("captions", subjects.captions_of, Caption, self.captions))
        self.delivery.watch_calls(self.feeds.watch)
        self.delivery.watch_binds(self.coordinator.on_bind)
        self.feed = EventFeed(bus)
        self.feed.add(NoticeProjector(self.delivery))
        self.feed.add(self.coordinator.on_event)
        await self.feed.start()
        if settings.socketio_admin_enabled:
            # Authenticated, read-only: it shows sockets and rooms, it cannot disconnect them.
            self.sockets.sio.instrument(
                auth={
                    "username": settings.socketio_admin_user,
                    "password": settings.socketio_admin_password,
                },
                mode="production",
                read_only=True,
                server_id=self.service_id,
            )
        if settings.mongo_url:
            # Connections are made on first use: MongoDB being away never blocks calls.
            self.history = ArchiveRepository.connect(
                settings.mongo_url, settings.mongo_database, timeout_s=settings.mongo_timeout_s
            )
        self.media.start()
        self.app.state.ctx = GatewayContext(
            settings=settings,
            tokens=self.tokens,
            conversations=conversations,
            guests=guests,
            calls=calls,
            limiter=self.limiter,
            history=self.history,
            addresses=self.sockets.addresses,
        )
        self.sweeper = Sweeper(
            self.store,
            self.mirror,
            PresenceReader(presence_kv, presence_health),
            interval_s=settings.call_sweep_interval_s,
            retention_s=settings.call_ended_retention_s,
            outbox_grace_s=settings.call_outbox_grace_s,
        )
        self.sweeper.start()
        return socketio.ASGIApp(self.sockets.sio, other_asgi_app=self.app)

    async def _emit(self, event: str, payload: dict[str, Any], sid: str) -> None:
        if self.sockets is not None:
            await self.sockets.emit(event, payload, sid)

    async def start(self, bus: Bus) -> None:
        self.readiness.bus = bus
        self.readiness.provisioned = True  # the runtime provisions before start()
        asgi = await self._build(bus)
        # One line per WebSocket open/close at info level is noise with thousands of sockets.
        logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, logging.getLogger().level))
        config = uvicorn.Config(
            asgi,
            host=self.settings.gateway_host,
            port=self.settings.gateway_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws_ping_interval=None,  # Socket.IO's own ping detects dead peers
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=int(self.settings.gateway_graceful_timeout_s),
        )
        # Bind here so a busy port fails start-up with a clear OSError (uvicorn would
        # call sys.exit inside its task instead).
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.settings.gateway_host, self.settings.gateway_port))
        except OSError:
            listener.close()
            log.error(
                "gateway.port_unavailable",
                host=self.settings.gateway_host,
                port=self.settings.gateway_port,
            )
            raise
        listener.listen(2048)
        listener.setblocking(False)
        self._server = EmbeddedServer(config)
        self._server_task = asyncio.create_task(self._server.serve([listener]), name="http")
        while not self._server.started:
            if self._server_task.done():
                raise RuntimeError("http server exited during start-up")
            await asyncio.sleep(0.02)
        log.info(
            "gateway.listening",
            host=self.settings.gateway_host,
            port=self.settings.gateway_port,
        )

    async def stop_accepting(self) -> None:
        await super().stop_accepting()
        self.readiness.draining = True
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.authority is not None:
            await self.authority.stop()
        if self._server is not None:
            self._server.should_exit = True

    async def close(self) -> None:
        if self.media is not None:
            await self.media.stop()
        if self.feed is not None:
            await self.feed.stop()
        if self.mirror is not None:
            await self.mirror.stop()
        if self.history is not None:
            self.history.close()

    async def wait_idle(self) -> None:
        await super().wait_idle()
        if self._server_task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._server_task

    def load_extra(self) -> dict[str, float]:
        connections = len(self._server.server_state.connections) if self._server else 0
        extra = {"http_connections": float(connections)}
        if self.delivery is not None:
            extra["sockets"] = float(self.delivery.socket_count)
            extra["deliveries"] = float(self.delivery.delivered)
            extra["calls_held"] = float(len(self.delivery.calls_held))
        if self.relay is not None:
            extra["signals_relayed"] = float(self.relay.relayed)
        if self.store is not None:
            extra["cas_conflicts"] = float(self.store.cas_conflicts)
            extra["call_events_published"] = float(self.store.events_published)
            extra["call_commands_published"] = float(self.store.commands_published)
            extra["outbox_publish_failures"] = float(self.store.publish_failures)
        if self.sweeper is not None:
            extra["timers_fired"] = float(self.sweeper.fired)
            extra["outbox_recovered"] = float(self.sweeper.recovered)
        if self.feed is not None:
            extra["events_received"] = float(self.feed.received)
            extra["events_duplicate"] = float(self.feed.duplicates)
        if self.presence is not None:
            extra["presence_writes"] = float(self.presence.writes)
        if self.media is not None:
            extra["media_sessions"] = float(self.media.count)
            extra["media_sessions_opened"] = float(self.media.opened)
            extra["media_sessions_lost"] = float(self.media.lost)
        if self.coordinator is not None:
            extra["mode_switches_told"] = float(self.coordinator.switches_told)
            extra["media_node_refusals"] = float(self.coordinator.refusals)
        if self.feeds is not None:
            extra["calls_subscribed"] = float(self.feeds.calls)
        if self.captions is not None:
            extra["captions_received"] = float(self.captions.received)
            extra["captions_delivered"] = float(self.captions.delivered)
            extra["captions_stale"] = float(self.captions.stale)
        if self.caption_signaling is not None:
            extra["client_transcripts"] = float(self.caption_signaling.transcripts_published)
        if self.mirror is not None:
            extra["calls_known"] = float(len(self.mirror.calls))
            live = [s for s, _ in self.mirror.calls.values() if s.status != "ended"]
            extra["active_calls"] = float(len(live))
            extra["active_participants"] = float(sum(len(s.participants) for s in live))
        extra["rate_limited"] = float(self.limiter.refused)
        if self.authority is not None:
            extra["sockets_expired"] = float(self.authority.expired)
            extra["guests_shown_out"] = float(self.authority.revoked)
        return extra
