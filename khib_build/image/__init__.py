"""The image file: the tree, the tables, the cpio packer, compression and reading back."""
