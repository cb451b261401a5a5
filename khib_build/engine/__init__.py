"""Building packages: keys, the cache (local and remote), sysroots, the scheduler."""
