"""``python -m schemas export [PATH]``: write the catalogue's JSON Schema (default stdout)."""

import argparse
import sys
from pathlib import Path

import msgspec

from schemas.catalogue import json_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write the JSON Schema of every message")
    export.add_argument("path", nargs="?", help="output file (default: standard output)")
    args = parser.parse_args(argv)

    document = msgspec.json.format(msgspec.json.encode(json_schema()), indent=2)
    if args.path:
        Path(args.path).write_bytes(document + b"\n")
        print(f"wrote {args.path}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(document + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
