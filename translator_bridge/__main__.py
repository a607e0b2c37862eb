"""``python -m translator_bridge``: run one translator bridge instance."""

import sys

from schemas.runtime import launch
from translator_bridge.service import TranslatorBridgeService
from translator_bridge.settings import TranslatorBridgeSettings


def main() -> None:
    sys.exit(launch(TranslatorBridgeService, TranslatorBridgeSettings))


if __name__ == "__main__":
    main()
