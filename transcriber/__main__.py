"""``python -m transcriber``: run one transcriber instance."""

import logging
import os
import sys

from schemas.runtime import launch
from transcriber.service import WEDGED_ENGINE, TranscriberService
from transcriber.settings import TranscriberSettings


def main() -> None:
    code = launch(TranscriberService, TranscriberSettings)
    if WEDGED_ENGINE.is_set():
        # Its batch was left to redelivery at the drain deadline; its thread would hold
        # the interpreter's exit (it joins executor threads) for as long as it is stuck.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
