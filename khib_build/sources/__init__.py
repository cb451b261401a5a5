"""Getting sources: pinned downloads through every origin, and safe unpacking."""
