"""``python -m media_node``: run one media node instance."""

import sys

from media_node import eventloop
from media_node.service import MediaNodeService
from media_node.settings import MediaNodeSettings
from schemas.runtime import launch


def main() -> None:
    eventloop.install()
    sys.exit(launch(MediaNodeService, MediaNodeSettings))


if __name__ == "__main__":
    main()
