"""The translator bridge service process."""

from schemas.bus import Bus
from schemas.logs import get_logger
from schemas.runtime import Service
from translator_bridge.settings import TranslatorBridgeSettings

log = get_logger("translator_bridge")


class TranslatorBridgeService(Service[TranslatorBridgeSettings]):
    """Connects, heartbeats and drains; its work arrives with its own issue."""

    kind = "translator_bridge"

    async def start(self, bus: Bus) -> None:
        self.bus = bus
