"""The khib image's constants for the khib tools: the twins of khib-core's khib-format.h,
its one source (tests/test_format_constants.py checks that each KHIB_ define there has
its value here, under the same name less the prefix)."""

from __future__ import annotations

PAGE = 4096
NOTE_NAME = b"KHIB"
VMCOREINFO_NAME = b"VMCOREINFO"
NOTE_SEGMENTS = 0x4B480001
NOTE_META = 0x4B480002
NOTE_LAYOUT = 0x4B480003
NOTE_SEAL = 0x4B480004
PT_MEMORY = 0x6B480000  # a memory segment (a data run's bytes are LZ4 blocks)
BLOCK = 256 << 10
BLOCK_RAW = 0x80000000

META_MAX = 64 << 10
VMCOREINFO_MAX = 1 << 20
PAIRS_MAX = 1 << 20
SEGMENTS_MAX = 0xFFFE
NOTES_MAX = 64 << 20

ELF_MAGIC = b"\x7fELF"
USED_MAGIC = b"KUSD"  # left by a resume: the same image is never resumed twice
ASIDE_MAGIC = b"KSET"  # left by a resume boot that refused the image
ATTEMPTS_AT = 64  # u32: resume boots that handed over to a restore
WRITES_AT = 68  # u32: restores that began to write memory
WHY_AT = 128  # why the image was set aside
WHY_MAX = 256
ATTEMPTS_MAX = 2  # resume boots that may hand over, at most

EXIT_WRITTEN = 0  # khib-restore: written and verified
EXIT_UNTOUCHED = 1  # nothing written
EXIT_USAGE = 2
EXIT_PARTLY = 3  # writing began and failed: memory is changed

STATUS_MAGIC = b"KHIBSTAT"
STATUS_NONCE = 16
STATUS_MESSAGE_AT = 24
STATUS_RETURN_AT = 1024  # how A finds B after the jump back
STATUS_KEY_AT = 2048
KEY_MIN = 16
KEY_MAX = 2040

MAILBOX_MAGIC = b"KHIBMBOX"  # B's page that A writes before it enters B again
MAILBOX_NONCE = 16
MAILBOX_REQUEST_AT = 24

KINDS = ("data", "zero", "free")  # enum khib_kind, in order
