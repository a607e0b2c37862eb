"""Mode selector settings, read once from the environment (variable = field upper-cased)."""

from typing import Annotated

import msgspec

from gateway.selector.rules import Rules
from schemas import subjects
from schemas.settings import PositiveFloat, ServiceSettings


class SelectorSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one mode selector instance."""

    #: A GROUP call on the SFU goes back to P2P only after this long at two or fewer.
    selector_to_p2p_hold_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    #: How long participants have to bring up a new path before the migration fails.
    selector_migration_deadline_s: PositiveFloat = 10.0
    #: Pre-warm: idle SFU sessions while a GROUP call of more than two members is P2P.
    selector_prewarm: bool = True
    #: Back-off after a failed migration (doubling from the base, capped).
    selector_retry_base_s: PositiveFloat = 2.0
    selector_retry_max_s: PositiveFloat = 30.0
    #: A media node that has not reported for this long is dead to placement.
    selector_node_expiry_s: PositiveFloat = 6.0
    #: How often each known media node is probed between its heartbeats (0: never; a
    #: crashed node is then found only by ``selector_node_expiry_s``).
    selector_node_probe_interval_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.5
    #: "No responders" this many times in a row (0.2 s apart) and a node is dead.
    selector_node_probe_misses: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2
    #: How often every known call is re-examined (a safety net under the events).
    selector_scan_interval_s: PositiveFloat = 2.0
    #: The durable consumer shared by every selector instance.
    selector_durable: str = subjects.SELECTOR_DURABLE
    #: Calls decided at once (each call's decisions are serial).
    selector_concurrency: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 256

    def rules(self) -> Rules:
        return Rules(
            to_p2p_hold_s=self.selector_to_p2p_hold_s,
            deadline_s=self.selector_migration_deadline_s,
            prewarm=self.selector_prewarm,
            retry_base_s=self.selector_retry_base_s,
            retry_max_s=self.selector_retry_max_s,
        )
