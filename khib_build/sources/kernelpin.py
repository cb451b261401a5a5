"""The kernel source an image config pins: fetched like any pinned file (download dir,
mirrors, offline mode), a Debian package of any suite through a private apt
configuration for that suite; the tarball such a package carries is taken out of it
once, streamed, into ``<cache>/kernel-src/<the .deb's sha256>-<its name>/``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from khib_build.errors import KhibError
from khib_build.fsutil import atomic_output, built_beside, exclusive, reason
from khib_build.report import say
from khib_build.settings.pins import KernelPin
from khib_build.settings.recipes import KERNEL_RECIPE
from khib_build.sources.extract import deb_file
from khib_build.sources.fetch import Sources, fetch


def pinned_tarball(pin: KernelPin, sources: Sources, unpacked: Path) -> Path:
    """The verified tarball ``pin`` names: in the download dir, or for a Debian package,
    taken out of it into a folder of ``unpacked`` (once)."""
    fetched = fetch(pin.pinned(), sources, KERNEL_RECIPE)
    if pin.deb is None:
        return fetched
    name = PurePosixPath(pin.member).name
    final = unpacked / f"{pin.sha256[:24]}-{name}"  # (a folder: the cache's items are)
    tarball = final / name
    with exclusive(unpacked / f".{final.name}.lock",
                   lambda: say("kernel: another run is taking the tarball out; waiting")):
        if not final.is_dir():
            say(f"kernel: taking {pin.member} out of {fetched.name} (once; kept in {unpacked})")
            try:
                with built_beside(final) as staging, \
                        atomic_output(staging / tarball.name) as out:
                    if deb_file(fetched, pin.member, out) is None:
                        assert pin.origin is not None
                        raise pin.origin.error("file" if pin.file else "deb",
                                               f"{fetched.name} has no file {pin.member}")
            except OSError as exc:
                raise KhibError(f"kernel: cannot take {pin.member} out of {fetched} into "
                                f"{unpacked}: {reason(exc)}") from None
    return tarball
