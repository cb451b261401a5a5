"""khib-hello: a tiny tool that runs on the image's Python."""
