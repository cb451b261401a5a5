"""Python in the image: the standard library an image needs and `kind: python` packages."""
