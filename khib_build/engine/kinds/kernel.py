"""kind: kernel: the kernel's recipe (``recipes/linux``), with the options every khib
kernel needs and the patches (``backports`` by release) its return path needs. It is not
a package: ``khib-build kernel`` builds it from the source the image config names."""

from __future__ import annotations

from khib_build.engine.kinds.base import Kind


class Kernel(Kind):
    name = "kernel"
    summary = "`khib-build kernel` builds it, from the image config's kernel_source"
    keys = frozenset({"backports"})
    package = False
    needs_source = False  # the kernel source the image config pins


KIND = Kernel()
