"""``python -m schemas export [PATH]``: write the catalogue's JSON Schema (default stdout).

``python -m schemas tap ...``: replay or follow the call event stream (see
:mod:`schemas.tap`).
"""

import argparse
import asyncio
import sys
from pathlib import Path

import msgspec

from schemas import tap
from schemas.catalogue import json_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write the JSON Schema of every message")
    export.add_argument("path", nargs="?", help="output file (default: standard output)")
    tap.build_parser(sub.add_parser("tap", help="replay or follow the call events as JSON lines"))
    args = parser.parse_args(argv)

    if args.command == "tap":
        try:
            return asyncio.run(tap.run(args, sys.stdout, sys.stderr))
        except (KeyboardInterrupt, BrokenPipeError):
            return tap.EXIT_OK

    document = msgspec.json.format(msgspec.json.encode(json_schema()), indent=2)
    if args.path:
        Path(args.path).write_bytes(document + b"\n")
        print(f"wrote {args.path}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(document + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
