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

/* One block of a data run: its memory, then what goes into the image. */
struct khib_pending {
	size_t segment;           /* its segment's index in the image */
	int first;                /* the segment's first block: where its offset is known */
	size_t used;              /* bytes of memory in block */
	uint32_t length;          /* stored bytes: LZ4, or as they are (raw) */
	int raw;
	unsigned char header[4];
	unsigned char digest[32]; /* of header and stored bytes: for the seal's list */
	unsigned char block[KHIB_BLOCK];
	unsigned char packed[LZ4_COMPRESSBOUND(KHIB_BLOCK)];
};

#define KHIB_BATCH 8          /* blocks packed at once, shared between the threads */
#define KHIB_THREADS_MAX 4

/*
 * The data runs being saved, a batch of blocks at a time: compressed and hashed by
 * threads (blocks are independent) while the next batch is filled, put into the image in
 * their order, so that the image is the same whatever the number of threads.
 */
struct khib_data_run {
	size_t segment;           /* the run being filled, or SIZE_MAX */
	size_t count;             /* whole blocks in the batch; blocks[count] is being filled */
	struct khib_pending *blocks;      /* the batch being filled: one of batch[] */
	struct khib_pending *flying;      /* the other, being packed, or NULL */
	size_t flying_count;
	unsigned threads;         /* 1: no thread is started */
	size_t batch_size;        /* blocks in a batch: 1 without threads (B's memory) */
	struct khib_workers *workers;
	struct khib_pending batch[2][KHIB_BATCH];
};

/* save-blocks.c */
int khib_blocks_start(struct khib_data_run *run, unsigned threads);
void khib_blocks_stop(struct khib_data_run *run);
int khib_block_done(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image);
int khib_blocks_out(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image);

int khib_flush(struct khib_writer *w);
int khib_put(struct khib_writer *w, const void *data, size_t size);
uint64_t khib_position(const struct khib_writer *w);
int khib_save_pages(int fd, int low_fd, const struct khib_range *ranges, size_t count, uint64_t total,
		    const struct khib_free_pages *free_pages, unsigned char *buffer,
		    struct khib_writer *w, struct khib_data_run *run, struct khib_image *image,
		    uint64_t pages[3]);

#endif
