"""The transcriber service process."""

from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.runtime import Service
from transcriber.settings import TranscriberSettings

log = get_logger("transcriber")


class TranscriberService(Service[TranscriberSettings]):
    """Connects, heartbeats and drains; its work arrives with its own issue."""

    kind = "transcriber"

    async def start(self, bus: Bus) -> None:
        self.bus = bus
