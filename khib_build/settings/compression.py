"""The compression formats an image may use: their names, levels and magic numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    default_level: int
    levels: range
    magic: bytes  # how a segment in this format starts

    def check_level(self, level: int | None) -> int:
        if level is None:
            return self.default_level
        if level not in self.levels:
            raise ValueError(f"{self.name} takes levels {self.levels.start} to "
                             f"{self.levels.stop - 1}, not {level}")
        return level


FORMATS = {f.name: f for f in (
    Format("gzip", 9, range(1, 10), b"\x1f\x8b"),
    Format("xz", 6, range(0, 10), b"\xfd7zXZ\x00"),
    Format("zstd", 19, range(1, 20), b"\x28\xb5\x2f\xfd"),
    Format("lz4", 9, range(1, 13), b"\x02\x21\x4c\x18"),
    Format("bzip2", 9, range(1, 10), b"BZh"),
    Format("lzma", 6, range(0, 10), b"\x5d\x00\x00"),
    Format("none", 0, range(0, 1), b"070701"),
)}
