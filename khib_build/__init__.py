"""khib-build: deterministic initramfs images for kexec jump."""

__version__ = "0.1.0"
