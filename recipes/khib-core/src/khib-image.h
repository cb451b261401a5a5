/*
 * The khib memory image: an ELF64 core file whose program headers of type
 * KHIB_PT_MEMORY (private: the stored bytes are compressed, not a plain PT_LOAD) carry
 * the physical addresses of the memory they hold in p_paddr and its size in p_memsz.
 * A run of all-zero pages, or of pages the old kernel had free, has p_filesz 0 (recorded,
 * not stored: a restore writes zeros); a data run stores its memory at p_offset as a
 * sequence of blocks, each covering KHIB_BLOCK bytes of it (the last one the rest): a
 * 32-bit little-endian header, the stored length with KHIB_BLOCK_RAW set when the bytes
 * are kept as they are, then the bytes (LZ4 when compressed).  Data comes first, from
 * the second page on; the program headers and one PT_NOTE follow it.  The PT_NOTE holds,
 * in this order:
 *   KHIB 0x4b480001  one record per memory header, in the same order: its kind (data,
 *                    zero, free) and the CRC-32 of a data run's memory;
 *   KHIB 0x4b480002  what the saver was asked to record (JSON from the khib tools);
 *   KHIB 0x4b480003  what the saver found of the old kernel's layout: the free pages it
 *                    counted and the kernel's own count, the direct map's offset, and the
 *                    window's pages kexec moved aside (destination, source), which
 *                    khib-restore --export puts back where the old kernel had them;
 *   VMCOREINFO 0     the old kernel's VMCOREINFO text, when it was readable;
 *   KHIB 0x4b480004  the seal: the image's size, the SHA-256 of (the SHA-256 of the stored
 *                    bytes in file order, the program headers, the notes before it) and
 *                    with a key an HMAC-SHA256 over the same.
 * The note types are private (core readers take types 1-6 for process state).  The ELF
 * header (its magic last of all) is written after everything else is on the disk: an
 * image without the magic is incomplete.  A resume replaces it with KHIB_USED_MAGIC, so
 * that the same image is never resumed twice.
 */
#ifndef KHIB_IMAGE_H
#define KHIB_IMAGE_H

#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KHIB_PAGE 4096u
#define KHIB_NOTE_NAME "KHIB"
#define KHIB_NOTE_SEGMENTS 0x4b480001u
#define KHIB_NOTE_META 0x4b480002u
#define KHIB_NOTE_LAYOUT 0x4b480003u
#define KHIB_NOTE_SEAL 0x4b480004u
#define KHIB_VMCOREINFO_NAME "VMCOREINFO"
#define KHIB_PT_MEMORY 0x6b480000u
#define KHIB_BLOCK (256u << 10)
#define KHIB_BLOCK_RAW 0x80000000u
#define KHIB_META_MAX (64u << 10)
#define KHIB_USED_MAGIC "KUSD"

enum khib_kind { KHIB_DATA, KHIB_ZERO, KHIB_FREE };

struct khib_record {      /* one per PT_LOAD, little-endian on disk */
	uint64_t paddr;
	uint64_t memsz;
	uint32_t crc32;       /* of a data segment's memory; 0 for the others */
	uint32_t kind;        /* enum khib_kind */
};

struct khib_pair {        /* a window page kexec moved aside: where A had it, where it is */
	uint64_t dest;
	uint64_t source;
};

struct khib_layout {      /* the layout note's descriptor, followed by its pairs */
	uint64_t page_offset;     /* the old kernel's direct map: vaddr = paddr + this */
	uint64_t free_recorded;   /* pages recorded as free in this image */
	uint64_t free_counted;    /* free pages the walk found in the old kernel */
	uint64_t kernel_count;    /* NR_FREE_PAGES as the old kernel counted them */
	uint64_t npairs;
};

struct khib_seal {        /* the seal note's descriptor */
	uint64_t image_size;
	uint64_t keyed;           /* 1: hmac holds an HMAC-SHA256 */
	unsigned char sha256[32];
	unsigned char hmac[32];
};

/* The old kernel's free pages, as khib_find_free_pages found them. */
struct khib_free_pages {
	unsigned char *bitmap;    /* a bit per pfn; NULL: none are known free */
	uint64_t npfns;
	uint64_t counted, kernel_count, page_offset;
	struct khib_pair *window;
	size_t nwindow;
	char *vmcoreinfo;         /* the note's text, when readable */
	size_t vmcoreinfo_size;
	char why[192];            /* why the free pages are not known */
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
	enum khib_kind kind;  /* zero and free: recorded, not stored */
	uint32_t crc32;
	uint64_t offset;      /* where its blocks are in the image (data segments) */
	uint64_t filesz;      /* how many bytes they take there */
};

struct khib_image {
	struct khib_segment *segments;
	size_t count;
	size_t capacity;
	struct khib_record *records;  /* as read from the records note */
	void *phdrs;                  /* the program headers, as read (the seal covers them) */
	size_t phdrs_size;
	char *meta;                   /* the meta note's descriptor */
	size_t meta_size;
	struct khib_layout layout;
	struct khib_pair *pairs;      /* the layout note's pairs */
	char *vmcoreinfo;
	size_t vmcoreinfo_size;
	struct khib_seal seal;
};

/* The notes' descriptors as the seal covers them, in order. */
struct khib_sealed_notes {
	const void *phdrs;
	size_t phdrs_size;
	const void *records;
	size_t records_size;
	const void *meta;
	size_t meta_size;
	const struct khib_layout *layout;
	const struct khib_pair *pairs;
	const void *vmcoreinfo;
	size_t vmcoreinfo_size;
};

struct khib_key {
	unsigned char block[64];      /* the key, padded (hashed first if longer) */
	int set;
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
void khib_hmac_init(struct khib_sha256 *ctx, const struct khib_key *key);
void khib_hmac_final(struct khib_sha256 *ctx, const struct khib_key *key,
		     unsigned char mac[32]);
int khib_read_key(const char *path, struct khib_key *key);
void khib_seal_digests(const unsigned char data_digest[32], const struct khib_sealed_notes *n,
		       const struct khib_key *key, struct khib_seal *seal);
int khib_append(struct khib_image *image, uint64_t paddr, uint64_t size, enum khib_kind kind,
		uint32_t crc, int merge);
void khib_free(struct khib_image *image);
int khib_read_image(FILE *file, const char *name, struct khib_image *image,
		    uint16_t *machine);
int khib_check_image(int fd, const char *name, const struct khib_image *image,
		     const struct khib_key *key);
/* Each block of a data segment's memory, decompressed, in order; -1 and a message. */
typedef int (*khib_block_fn)(void *context, const unsigned char *data, size_t size,
			     uint64_t at);
int khib_segment_blocks(int fd, const char *name, const struct khib_image *image, size_t index,
			struct khib_sha256 *sha, khib_block_fn each, void *context);
int khib_overlaps(const struct khib_image *image, const struct khib_range *ranges,
		  size_t count, const char *name);
Elf64_Ehdr khib_core_header(uint16_t machine, uint64_t phoff, uint16_t phnum);
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
int khib_find_free_pages(int fd, const struct khib_range *ranges, size_t count,
			 const struct khib_range *all, size_t nall, uint64_t vmcoreinfo,
			 uint64_t vmcoreinfo_size, uint64_t control_page, uint64_t kernel_code,
			 struct khib_free_pages *f);
int khib_page_free(const struct khib_free_pages *f, uint64_t pfn);

/* The programs of the one khib-core binary, chosen by the name it runs as. */
int khib_save_main(int argc, char **argv);
int khib_restore_main(int argc, char **argv);
int khib_jump_back_main(int argc, char **argv);
int khib_report_main(int argc, char **argv);

#endif
