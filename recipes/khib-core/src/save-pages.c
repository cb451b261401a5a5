/*
 * khib-save's one pass: every page of the old kernel's RAM is free (not even read), zero
 * or data; data runs are CRC-32'd and cut into blocks (save-blocks.c: LZ4, each block's
 * SHA-256 listed for the seal), never past the room the image has.
 */
#define _GNU_SOURCE
#include "save-pages.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#define PROGRESS_EVERY (64ull << 20)

/* Where the image grows: buffered, hashed as written, never past its room. */

int khib_flush(struct khib_writer *w)
{
	if (w->used && khib_pwrite_full(w->out, w->buffer, w->used, w->at) < 0)
		return -1;
	/* the disk starts writing it now, while the next MiB is made: the fsync at the end
	 * has little left to wait for (not every file takes the hint: no matter) */
	if (w->used)
		sync_file_range(w->out, (off_t)w->at, (off_t)w->used, SYNC_FILE_RANGE_WRITE);
	w->at += w->used;
	w->used = 0;
	return 0;
}

/* Append to the image; -1 with errno EFBIG once it would outgrow its room. */
int khib_put(struct khib_writer *w, const void *data, size_t size)
{
	const unsigned char *bytes = data;

	if (w->at + w->used + size > w->limit) {
		errno = EFBIG;
		return -1;
	}
	while (size) {
		size_t room = sizeof(w->buffer) - w->used;
		size_t length = size < room ? size : room;
		memcpy(w->buffer + w->used, bytes, length);
		w->used += length;
		bytes += length;
		size -= length;
		if (w->used == sizeof(w->buffer) && khib_flush(w) < 0)
			return -1;
	}
	return 0;
}

uint64_t khib_position(const struct khib_writer *w)
{
	return w->at + w->used;
}


/* The data run ends: its last block done (the batch puts its size in the image). */
static int end_run(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image)
{
	if (run->segment == SIZE_MAX)
		return 0;
	run->segment = SIZE_MAX;
	return khib_block_done(w, run, image);
}

/* The kind of one page: free (by the old kernel's own account), zero, or data. */
static enum khib_kind kind_of(const struct khib_free_pages *free_pages, uint64_t paddr,
			      const unsigned char *page, size_t size)
{
	if (khib_page_free(free_pages, paddr / KHIB_PAGE))
		return KHIB_FREE;
	return khib_is_zero(page, size) ? KHIB_ZERO : KHIB_DATA;
}

/* Whether every page of [paddr, paddr + length) is free: nothing to read there. */
static int all_free(const struct khib_free_pages *free_pages, uint64_t paddr, size_t length)
{
	for (size_t page = 0; page < length; page += KHIB_PAGE)
		if (!khib_page_free(free_pages, (paddr + page) / KHIB_PAGE))
			return 0;
	return 1;
}

/* One page into the image: a new segment or the last one's continuation. */
static int add_page(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image,
		    uint64_t paddr, enum khib_kind kind, const unsigned char *page, size_t size)
{
	struct khib_segment *last = image->count ? &image->segments[image->count - 1] : NULL;
	int continues = last && last->kind == kind && last->paddr + last->memsz == paddr;
	struct khib_pending *block;
	uint32_t crc;

	if (!continues && end_run(w, run, image) < 0)
		return -1;
	block = &run->blocks[run->count];
	if (kind == KHIB_DATA)   /* the CRC-32 of the bytes stored: the copy, read once */
		memcpy(block->block + block->used, page, size);
	crc = kind != KHIB_DATA ? 0 : khib_crc32(continues ? last->crc32 : 0,
						   block->block + block->used, size);
	if (!continues && image->count >= KHIB_SEGMENTS_MAX) {
		errno = E2BIG;   /* found here, not after the whole save */
		return -1;
	}
	if (khib_append(image, paddr, size, kind, crc, 1) < 0)
		return -1;
	if (kind != KHIB_DATA)
		return 0;
	if (!continues)
		run->segment = image->count - 1;
	if (!block->used) {
		block->segment = run->segment;
		block->first = !continues;
	}
	block->used += size;
	return block->used == KHIB_BLOCK ? khib_block_done(w, run, image) : 0;
}

/*
 * A range's bytes: mapped from fd (*mapped set, for khib_mem_unmap), or read into buffer
 * from B's copy of the low memory (low_fd, khib-save --low).  NULL if unreadable.
 */
static const unsigned char *read_range(int fd, int low_fd, const struct khib_range *range,
				       unsigned char *buffer, size_t length, uint64_t at,
				       int *mapped)
{
	*mapped = !(low_fd >= 0 && range->paddr >= KHIB_LOW_START && range->paddr < KHIB_LOW_END);
	if (*mapped)
		return khib_mem_map(fd, range->offset + at, length);
	return khib_pread_full(low_fd, buffer, length, range->offset + at) < 0 ? NULL : buffer;
}

/* The one pass: every page of the ranges, free (not read), zero or data. */
int khib_save_pages(int fd, int low_fd, const struct khib_range *ranges, size_t count, uint64_t total,
		      const struct khib_free_pages *free_pages, unsigned char *buffer,
		      struct khib_writer *w, struct khib_data_run *run, struct khib_image *image,
		      uint64_t pages[3])
{
	uint64_t done = 0, shown = 0;

	for (size_t r = 0; r < count; r++) {
		for (uint64_t at = 0; at < ranges[r].size;) {
			size_t length = ranges[r].size - at < KHIB_CHUNK ? (size_t)(ranges[r].size - at) : KHIB_CHUNK;
			int skip = all_free(free_pages, ranges[r].paddr + at, length), mapped = 0;
			const unsigned char *bytes = skip ? NULL :
				read_range(fd, low_fd, &ranges[r], buffer, length, at, &mapped);
			int failed = !skip && !bytes;
			for (size_t page = 0; page < length && !failed; page += KHIB_PAGE) {
				size_t size = length - page < KHIB_PAGE ? length - page : KHIB_PAGE;
				uint64_t paddr = ranges[r].paddr + at + page;
				enum khib_kind kind = skip ? KHIB_FREE :
					kind_of(free_pages, paddr, bytes + page, size);
				failed = add_page(w, run, image, paddr, kind, skip ? NULL : bytes + page,
						  size) < 0;
				pages[kind]++;
			}
			if (mapped && bytes && khib_mem_unmap(bytes, ranges[r].offset + at, length) < 0)
				failed = 1;
			if (failed)
				return -1;
			at += length;
			done += length;
			if (done - shown >= PROGRESS_EVERY || done == total) {
				khib_progress("saved", done, total);
				shown = done;
			}
		}
	}
	return end_run(w, run, image) < 0 ? -1 : khib_blocks_out(w, run, image);
}

