"""``python -m transcriber``: run one transcriber instance."""

import sys

from schemas.runtime import launch
from transcriber.service import TranscriberService
from transcriber.settings import TranscriberSettings


def main() -> None:
    sys.exit(launch(TranscriberService, TranscriberSettings))


if __name__ == "__main__":
    main()
