/*
 * The khib memory image: an ELF64 core file whose PT_LOAD segments carry the physical
 * addresses of the memory they hold.  A run of all-zero pages is a segment with
 * p_filesz 0 (its bytes are recorded, not stored); every other segment stores its pages.
 * A PT_NOTE ("KHIB", type 1) holds one record per PT_LOAD, in the same order, with the
 * CRC-32 of the segment's memory (zeros included) and its count of zero pages.
 */
#ifndef KHIB_IMAGE_H
#define KHIB_IMAGE_H

#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KHIB_PAGE 4096u
#define KHIB_NOTE_NAME "KHIB"
#define KHIB_NOTE_SEGMENTS 1

struct khib_record {      /* one per PT_LOAD, little-endian on disk */
	uint64_t paddr;
	uint64_t memsz;
	uint32_t crc32;
	uint32_t zero_pages;
};

struct khib_segment {
	uint64_t paddr;
	uint64_t memsz;
	int zero;             /* all zero: recorded, not stored */
	uint32_t crc32;
	uint64_t offset;      /* where its bytes are in the image (stored segments) */
};

struct khib_image {
	struct khib_segment *segments;
	size_t count;
	size_t capacity;
};

/* Where one range of the old kernel's memory can be read: a file and an offset. */
struct khib_range {
	uint64_t paddr;
	uint64_t size;
	uint64_t offset;
};

uint32_t khib_crc32(uint32_t crc, const void *data, size_t size);
int khib_append(struct khib_image *image, uint64_t paddr, uint64_t size, int zero,
		uint32_t crc, int merge);
void khib_free(struct khib_image *image);
int khib_read_image(FILE *file, const char *name, struct khib_image *image,
		    uint16_t *machine);
int khib_read_ranges(const char *path, struct khib_range **ranges, size_t *count);
int khib_exclude(struct khib_range **ranges, size_t *count, const struct khib_range *holes,
		 size_t nholes);
int khib_vmcore_ranges(int fd, const char *name, struct khib_range **ranges,
		       size_t *count);
int khib_pread_full(int fd, void *buffer, size_t size, uint64_t offset);
int khib_pwrite_full(int fd, const void *buffer, size_t size, uint64_t offset);
int khib_mem_copy(int fd, void *buffer, size_t size, uint64_t offset, int to_memory);
int khib_is_zero(const unsigned char *page, size_t size);
void khib_progress(const char *what, uint64_t done, uint64_t total);

/* The programs of the one khib-core binary, chosen by the name it runs as. */
int khib_save_main(int argc, char **argv);
int khib_restore_main(int argc, char **argv);
int khib_jump_back_main(int argc, char **argv);

#endif
