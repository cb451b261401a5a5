"""One ``-j N`` budget for a whole run, shared the way GNU make shares it.

The run owns a pipe holding N tokens.  A package build takes one token before it starts
and gives it back when it ends; its ``make`` (told about the pipe through ``MAKEFLAGS``)
counts that token as its own first job and takes more from the pipe for parallel jobs.
So packages building side by side and each package's own ``make`` draw from the same N
slots: one big package gets all N, four small ones get one or more each.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterator

from khib_build import cancel


class JobServer:
    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)
        self.read_fd, self.write_fd = os.pipe()
        os.write(self.write_fd, b"+" * self.jobs)

    @property
    def makeflags(self) -> str:
        return f"-j --jobserver-auth={self.read_fd},{self.write_fd}"

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one token for the duration; gives up if the run is cancelled meanwhile."""
        while True:
            cancel.check()
            ready, _, _ = select.select([self.read_fd], [], [], 0.2)
            if ready:
                try:
                    token = os.read(self.read_fd, 1)
                except BlockingIOError:
                    continue
                if token:
                    break
        try:
            yield
        finally:
            os.write(self.write_fd, token)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
