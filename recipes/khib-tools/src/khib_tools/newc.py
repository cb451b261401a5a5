"""A minimal cpio "newc" writer: the segment A appends to B's initrd."""

from __future__ import annotations


def entry(name: str, data: bytes, mode: int, ino: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def archive(files: dict[str, bytes]) -> bytes:
    """Folders and files (0644), then the trailer."""
    out, ino = b"", 1
    folders = sorted({"/".join(n.split("/")[:i]) for n in files
                      for i in range(1, n.count("/") + 1)})
    for folder in folders:
        out += entry(folder, b"", 0o040755, ino)
        ino += 1
    for name, data in sorted(files.items()):
        out += entry(name, data, 0o100644, ino)
        ino += 1
    return out + entry("TRAILER!!!", b"", 0, 0)
