"""MediaNode settings, read once from the environment."""

from typing import Annotated

import msgspec

from schemas.settings import ServiceSettings


class MediaNodeSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one media node instance."""

    #: Address media is sent from and received on (ICE host candidates).
    media_node_public_ip: str = "127.0.0.1"
    #: Most participants this node accepts before placement must pick another node.
    media_node_max_participants: Annotated[int, msgspec.Meta(ge=1)] = 50
