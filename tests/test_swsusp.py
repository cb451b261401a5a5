"""The kernel's own hibernation (swsusp) works on khib's x86_64 kernel, in QEMU TCG with
two CPUs and the workload bench/hibernate.py compares khib with: A hibernates to a swap
partition and powers off; the next boot with ``resume=`` reads the image and A carries on
with its file, its process, its token and both CPUs. Without it, the benchmark's swsusp
column could quietly measure a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hibernation_peers import a_initrd, hibernate_once, when

pytestmark = pytest.mark.slow


def test_swsusp_hibernates_and_resumes_on_the_khib_kernel(image_x86_64: Path,
                                                          kernel_x86_64: Path,
                                                          tmp_path: Path) -> None:
    initrd = a_initrd(kernel_x86_64, image_x86_64, "swsusp", tmp_path)
    run = hibernate_once("swsusp", 512, kernel_x86_64, initrd, tmp_path)  # checks A whole
    assert when(run.first, "PM: Image saving done") is not None
    assert when(run.second, "PM: Image loading done") is not None
    assert run.written >= 64 << 20  # A's random file at least, compressed or not
    assert run.read >= 64 << 20
