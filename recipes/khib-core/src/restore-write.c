/*
 * khib-restore's writing and verifying of memory (khib-restore.c decides whether to).
 *
 * The data runs are written first, each block compared with the digest the check kept
 * before a byte of it is written.  Then the zero and free runs, which must read as zeros:
 * each window is read, and only one that does not is written with zeros and read again
 * (a machine's memory after a boot is mostly zeros already: under QEMU all of it is).
 * No write after that pass puts anything but zeros anywhere, so a window read as zeros
 * there stays so: that reading is its verification.  Last, every data run is read back
 * and its CRC-32 compared, after every write.
 */
#define _GNU_SOURCE
#include "khib-core.h"
#include "restore.h"

#include <errno.h>
#include <string.h>

int put_into(void *context, const unsigned char *data, size_t size, uint64_t at)
{
	const struct khib_destination *to = context;

	if (!to->memory)
		return khib_pwrite_full(to->fd, data, size, to->base + at);
	*to->written = 1;
	return khib_phys_copy(to->phys, (void *)data, size, to->base + at, 1);
}

static int all_zero(void *context, const unsigned char *data, size_t size, uint64_t paddr)
{
	(void)paddr;
	if (!khib_is_zero(data, size))
		*(int *)context = 1;
	return 0;
}

/* Whether memory [paddr, paddr + size) reads as zeros: 1 yes, 0 no, -1 unreadable. */
static int reads_zero(const struct khib_phys *mem, uint64_t paddr, uint64_t size,
		      unsigned char *buffer)
{
	int nonzero = 0;

	if (khib_phys_read(mem, paddr, size, buffer, all_zero, &nonzero) < 0)
		return -1;
	return !nonzero;
}

/*
 * A zero or free run: each window read; one that is not zeros already is written with
 * zeros (zeros: KHIB_WINDOW of them) and must read as zeros then.  The windows that do
 * not, counted in *bad.
 */
static int zero_run(const struct khib_phys *mem, const struct khib_segment *s,
		    const unsigned char *zeros, unsigned char *buffer, int *written, long *bad)
{
	for (uint64_t at = 0; at < s->memsz;) {
		size_t length = s->memsz - at < KHIB_WINDOW ? (size_t)(s->memsz - at) : KHIB_WINDOW;
		int zero = reads_zero(mem, s->paddr + at, length, buffer);
		if (zero == 0) {
			*written = 1;
			if (khib_phys_copy(mem, (void *)zeros, length, s->paddr + at, 1) < 0)
				return -1;
			zero = reads_zero(mem, s->paddr + at, length, buffer);
		}
		if (zero < 0)
			return -1;
		if (!zero) {
			fprintf(stderr, "khib-restore: 0x%llx-0x%llx does not read as zeros\n",
				(unsigned long long)(s->paddr + at),
				(unsigned long long)(s->paddr + at + length - 1));
			++*bad;
		}
		at += length;
	}
	return 0;
}

/*
 * Every segment into memory, data runs first, and the zero and free runs verified as
 * they are made zeros (*bad: the windows that are not).  *written says whether a byte
 * of memory may have changed.  buffer: 2 * KHIB_WINDOW bytes.
 */
int khib_write_back(int image_fd, const char *name, const struct khib_phys *mem,
		    struct khib_image *image, unsigned char *buffer, int *written, long *bad)
{
	memset(buffer, 0, KHIB_WINDOW);
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		struct khib_destination to = {-1, mem, s->paddr, 1, written};
		if (s->kind == KHIB_DATA &&
		    khib_segment_blocks(image_fd, name, image, i, 1, put_into, &to) < 0)
			goto fail;
	}
	for (size_t i = 0; i < image->count; i++)
		if (image->segments[i].kind != KHIB_DATA &&
		    zero_run(mem, &image->segments[i], buffer, buffer + KHIB_WINDOW, written,
			     bad) < 0)
			goto fail;
	return 0;
fail:
	fprintf(stderr, "khib-restore: writing the old kernel's memory: %s\n",
		errno ? strerror(errno) : "the image changed");
	return -1;
}

/*
 * Compare memory with the image: data runs by CRC-32, zero runs (and free runs when
 * free is set: after a write; the old kernel's free pages hold anything) as zeros,
 * zero runs not at all when data_only is set (the writing pass verified them).  The
 * number of segments that differ, or -1.
 */
long khib_verify(const struct khib_phys *mem, const struct khib_image *image,
		 unsigned char *buffer, int free, int data_only)
{
	long bad = 0;

	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		uint32_t crc = 0;
		int nonzero = 0, failed;
		if ((s->kind == KHIB_FREE && !free) || (s->kind != KHIB_DATA && data_only))
			continue;
		failed = s->kind == KHIB_DATA ?
			 khib_phys_read(mem, s->paddr, s->memsz, buffer, khib_add_crc, &crc) :
			 khib_phys_read(mem, s->paddr, s->memsz, buffer, all_zero, &nonzero);
		if (failed < 0) {
			fprintf(stderr, "khib-restore: reading 0x%llx-0x%llx: %s\n",
				(unsigned long long)s->paddr,
				(unsigned long long)(s->paddr + s->memsz - 1), strerror(errno));
			return -1;
		}
		if (s->kind == KHIB_DATA ? crc != s->crc32 : nonzero) {
			fprintf(stderr, "khib-restore: 0x%llx-0x%llx differs from the image\n",
				(unsigned long long)s->paddr,
				(unsigned long long)(s->paddr + s->memsz - 1));
			bad++;
		}
	}
	return bad;
}
