"""``python -m gateway.archive``: run one archive instance (call events into MongoDB)."""

import sys

from gateway.archive.service import ArchiveService
from gateway.archive.settings import ArchiveSettings
from schemas.runtime import launch


def main() -> None:
    sys.exit(launch(ArchiveService, ArchiveSettings))


if __name__ == "__main__":
    main()
