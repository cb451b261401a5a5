/* khib-save's one pass over memory (save-pages.c): pages into LZ4 blocks, never past the room. */
#ifndef KHIB_SAVE_PAGES_H
#define KHIB_SAVE_PAGES_H

#include "khib-core.h"

#include <lz4.h>

#define KHIB_CHUNK (1u << 20)

/* Where the image grows: buffered, each block's digest listed, never past its room. */
struct khib_writer {
	int out;
	uint64_t at;              /* the image offset of buffer[0] */
	uint64_t limit;
	size_t used;
	struct khib_sha256 list;  /* of each stored block's SHA-256, in file order */
	unsigned char buffer[KHIB_CHUNK];
};

/* The memory of the data run being saved, a block at a time. */
struct khib_data_run {
	size_t segment;           /* its index in the image, or SIZE_MAX */
	size_t used;
	unsigned char block[KHIB_BLOCK];
	unsigned char packed[LZ4_COMPRESSBOUND(KHIB_BLOCK)];
};

int khib_flush(struct khib_writer *w);
int khib_put(struct khib_writer *w, const void *data, size_t size);
uint64_t khib_position(const struct khib_writer *w);
int khib_save_pages(int fd, int low_fd, const struct khib_range *ranges, size_t count, uint64_t total,
		    const struct khib_free_pages *free_pages, unsigned char *buffer,
		    struct khib_writer *w, struct khib_data_run *run, struct khib_image *image,
		    uint64_t pages[3]);

#endif
