/*
 * The khib memory image: an ELF64 core file whose PT_LOAD segments carry the physical
 * addresses of the memory they hold.  A run of all-zero pages is a segment with
 * p_filesz 0 (its bytes are recorded, not stored); every other segment stores its pages.
 * One PT_NOTE holds three "KHIB" notes:
 *   type 1  one record per PT_LOAD, in the same order: the CRC-32 of the segment's
 *           memory (zeros included) and its count of zero pages;
 *   type 2  what the saver was asked to record (opaque here; JSON from the khib tools);
 *   type 3  the seal: the image's size and the SHA-256 of the type 1 and type 2
 *           descriptors followed by every stored byte, in file order.
 * The ELF magic is written last, after everything else is on the disk: an image without
 * it is incomplete.  A resume replaces it with KHIB_USED_MAGIC, so that the same image
 * is never resumed twice.
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
#define KHIB_NOTE_META 2
#define KHIB_NOTE_SEAL 3
#define KHIB_META_MAX (64u << 10)
#define KHIB_USED_MAGIC "KUSD"

struct khib_record {      /* one per PT_LOAD, little-endian on disk */
	uint64_t paddr;
	uint64_t memsz;
	uint32_t crc32;
	uint32_t zero_pages;
};

struct khib_seal {        /* the type 3 note's descriptor */
	uint64_t image_size;
	unsigned char sha256[32];
};

struct khib_sha256 {
	uint32_t state[8];
	uint64_t length;
	unsigned char buffer[64];
	size_t used;
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
	struct khib_record *records;  /* as read from the type 1 note */
	char *meta;                   /* the type 2 note's descriptor */
	size_t meta_size;
	struct khib_seal seal;
};

/* Where one range of the old kernel's memory can be read: a file and an offset. */
struct khib_range {
	uint64_t paddr;
	uint64_t size;
	uint64_t offset;
};

uint32_t khib_crc32(uint32_t crc, const void *data, size_t size);
void khib_sha256_init(struct khib_sha256 *ctx);
void khib_sha256_update(struct khib_sha256 *ctx, const void *data, size_t size);
void khib_sha256_final(struct khib_sha256 *ctx, unsigned char digest[32]);
int khib_append(struct khib_image *image, uint64_t paddr, uint64_t size, int zero,
		uint32_t crc, int merge);
void khib_free(struct khib_image *image);
int khib_read_image(FILE *file, const char *name, struct khib_image *image,
		    uint16_t *machine);
int khib_check_image(int fd, const char *name, const struct khib_image *image,
		     unsigned char *buffer, size_t chunk);
int khib_overlaps(const struct khib_image *image, const struct khib_range *ranges,
		  size_t count, const char *name);
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
double khib_seconds(void);

/* The programs of the one khib-core binary, chosen by the name it runs as. */
int khib_save_main(int argc, char **argv);
int khib_restore_main(int argc, char **argv);
int khib_jump_back_main(int argc, char **argv);
int khib_report_main(int argc, char **argv);

#endif
