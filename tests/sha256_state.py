"""SHA-256's compression function, to name the secrets HMAC derives from a key: the
states after one block of the padded key XOR ipad and XOR opad, which are all a forger
needs (tests/test_hibernate.py searches a saved image for them)."""

from __future__ import annotations

import hashlib
import struct

K = struct.unpack(">64I", bytes.fromhex("""
428a2f98 71374491 b5c0fbcf e9b5dba5 3956c25b 59f111f1 923f82a4 ab1c5ed5 d807aa98 12835b01
243185be 550c7dc3 72be5d74 80deb1fe 9bdc06a7 c19bf174 e49b69c1 efbe4786 0fc19dc6 240ca1cc
2de92c6f 4a7484aa 5cb0a9dc 76f988da 983e5152 a831c66d b00327c8 bf597fc7 c6e00bf3 d5a79147
06ca6351 14292967 27b70a85 2e1b2138 4d2c6dfc 53380d13 650a7354 766a0abb 81c2c92e 92722c85
a2bfe8a1 a81a664b c24b8b70 c76c51a3 d192e819 d6990624 f40e3585 106aa070 19a4c116 1e376c08
2748774c 34b0bcb5 391c0cb3 4ed8aa4a 5b9cca4f 682e6ff3 748f82ee 78a5636f 84c87814 8cc70208
90befffa a4506ceb bef9a3f7 c67178f2"""))
H0 = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
      0x5BE0CD19]
MASK = 0xFFFFFFFF


def rotr(x: int, n: int) -> int:
    return (x >> n | x << (32 - n)) & MASK


def compress(state: list[int], block: bytes) -> list[int]:
    """One 64-byte block into a SHA-256 state (FIPS 180-4)."""
    w = list(struct.unpack(">16I", block))
    for i in range(16, 64):
        s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ w[i - 15] >> 3
        s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ w[i - 2] >> 10
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & MASK)
    a, b, c, d, e, f, g, h = state
    for i in range(64):
        t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + (e & f ^ ~e & g) + K[i] + w[i]
        t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + (a & b ^ a & c ^ b & c)
        a, b, c, d, e, f, g, h = (t1 + t2) & MASK, a, b, c, (d + t1) & MASK, e, f, g
    return [(x + y) & MASK for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True)]


def hmac_secrets(key: bytes) -> dict[str, bytes]:
    """What HMAC-SHA256 derives from ``key`` that would let one seal: the key block, its
    two pads, and the states after them (as a C program keeps them: native little-endian
    words, and big-endian as a digest writes them)."""
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    found = {"key": key, "key block": block.rstrip(b"\0")}
    for name, pad in (("inner", 0x36), ("outer", 0x5C)):
        padded = bytes(byte ^ pad for byte in block)
        state = compress(H0, padded)
        found[f"{name} pad"] = padded
        found[f"{name} state (LE)"] = struct.pack("<8I", *state)
        found[f"{name} state (BE)"] = struct.pack(">8I", *state)
    return found
