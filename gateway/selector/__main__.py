"""``python -m gateway.selector``: run one mode selector instance."""

import sys

from gateway.selector.service import SelectorService
from gateway.selector.settings import SelectorSettings
from schemas.runtime import launch


def main() -> None:
    sys.exit(launch(SelectorService, SelectorSettings))


if __name__ == "__main__":
    main()
