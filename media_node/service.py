"""The media node service process."""

from media_node.settings import MediaNodeSettings
from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.runtime import Service

log = get_logger("media_node")


class MediaNodeService(Service[MediaNodeSettings]):
    """Connects, heartbeats and drains; its work arrives with its own issue."""

    kind = "media_node"

    async def start(self, bus: Bus) -> None:
        self.bus = bus
