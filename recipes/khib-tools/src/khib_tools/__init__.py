"""khib: kexec jump, save and restore, run inside a khib image."""
