"""Print a marker, the interpreter's version and pointer size, and a digest computed with
json, struct, hashlib and argparse, so a test can check each of them worked."""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys


def digest(count: int) -> str:
    """sha256 of the JSON list of the first ``count`` squares, packed as little-endian u32."""
    squares = [i * i for i in range(count)]
    packed = struct.pack(f"<{count}I", *squares)
    document = json.dumps({"squares": squares, "packed": packed.hex()}, sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="khib-hello", description=__doc__)
    parser.add_argument("--count", type=int, default=10, help="how many squares")
    args = parser.parse_args(argv)
    print("KHIB-HELLO-MARKER")
    print(f"version={sys.version.split()[0]}")
    print(f"pointer-size={struct.calcsize('P')}")
    print(f"digest={digest(args.count)}")
    return 0
