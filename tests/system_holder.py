"""A user's process in the Debian system's scenario (tests/system_scenario.sh): 32 MiB of
random data with the token at its start; its SHA-256 when it starts and on SIGUSR1."""

import hashlib
import os
import signal
import sys

token = sys.argv[1].encode()
data = bytearray(os.urandom(32 << 20))
data[:len(token)] = token


def say(tag: str) -> None:
    print(f"{tag} uid={os.getuid()} sha256={hashlib.sha256(data).hexdigest()} "
          f"token={data[:len(token)].decode(errors='replace')}", flush=True)


say("HOLDER")
signal.signal(signal.SIGUSR1, lambda *_: say("HOLDER-AFTER"))
while True:
    signal.pause()
