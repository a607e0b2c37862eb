"""``python -m gateway``: run one gateway instance."""

import sys

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from schemas.runtime import launch


def main() -> None:
    sys.exit(launch(GatewayService, GatewaySettings))


if __name__ == "__main__":
    main()
