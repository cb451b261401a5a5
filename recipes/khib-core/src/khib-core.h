/*
 * khib-core's internal interface: the image in memory, ranges of physical memory,
 * careful I/O, digests.  The format on the disk is khib-format.h.
 */
#ifndef KHIB_CORE_H
#define KHIB_CORE_H

#include "khib-format.h"

#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__x86_64__)
#define KHIB_MACHINE EM_X86_64
#else
#define KHIB_MACHINE EM_386
#endif

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
	size_t first_block;   /* its first block's place in khib_image.digests */
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
	unsigned char (*digests)[32]; /* each stored block's SHA-256, as the check found it */
	size_t ndigests;              /* the list's room */
	size_t nblocks;               /* the blocks of the data runs: digests in the list */
};

/*
 * The notes' descriptors as the seal covers them, in order.  The layout is a copy, and
 * the rest bytes: in a trailer being written they sit at the notes' 4-byte alignment.
 */
struct khib_sealed_notes {
	const void *phdrs;
	size_t phdrs_size;
	const void *records;
	size_t records_size;
	const void *meta;
	size_t meta_size;
	struct khib_layout layout;
	const void *pairs;        /* layout.npairs of them */
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

/* checksum.c, sha256.c */
uint32_t khib_crc32(uint32_t crc, const void *data, size_t size);
void khib_crc32_ready(void);
int khib_add_crc(void *context, const unsigned char *data, size_t size, uint64_t at);
uint32_t khib_crc32_table(uint32_t crc, const void *data, size_t size);
int khib_is_zero(const unsigned char *page, size_t size);
void khib_sha256_init(struct khib_sha256 *ctx);
void khib_sha256_ready(void);
void khib_sha256_update(struct khib_sha256 *ctx, const void *data, size_t size);
void khib_sha256_final(struct khib_sha256 *ctx, unsigned char digest[32]);
void khib_hmac_init(struct khib_sha256 *ctx, const struct khib_key *key);
void khib_hmac_final(struct khib_sha256 *ctx, const struct khib_key *key,
		     unsigned char mac[32]);
void khib_key_from(const unsigned char *bytes, size_t size, struct khib_key *key);
int khib_read_key(const char *path, struct khib_key *key);

/* seal.c */
void khib_seal_digests(const unsigned char data_digest[32], const struct khib_sealed_notes *n,
		       const struct khib_key *key, struct khib_seal *seal);
int khib_same_digest(const unsigned char *a, const unsigned char *b);
void khib_wipe(void *data, size_t size);

/* image-read.c: the headers and notes, every size and place checked */
int khib_append(struct khib_image *image, uint64_t paddr, uint64_t size, enum khib_kind kind,
		uint32_t crc, int merge);
void khib_free(struct khib_image *image);
int khib_read_image(int fd, const char *name, struct khib_image *image, uint16_t *machine);

/* image-check.c: the stored blocks, the seal */
typedef int (*khib_block_fn)(void *context, const unsigned char *data, size_t size,
			     uint64_t at);
int khib_segment_blocks(int fd, const char *name, struct khib_image *image, size_t index,
			int recheck, khib_block_fn each, void *context);
int khib_check_image(int fd, const char *name, struct khib_image *image,
		     const struct khib_key *key);
int khib_take_digests(const char *path, const char *name, struct khib_image *image,
		      const struct khib_key *key);
int khib_write_digests(const struct khib_image *image, const char *path);

/* ranges.c */
int khib_read_ranges(const char *path, struct khib_range **ranges, size_t *count);
int khib_exclude(struct khib_range **ranges, size_t *count, const struct khib_range *holes,
		 size_t nholes);
/* Whether [paddr, paddr + size) lies in one of the ranges. */
int khib_inside(const struct khib_range *ranges, size_t count, uint64_t paddr, uint64_t size);
int khib_take_low(struct khib_range **ranges, size_t *count, const struct khib_range *holes,
		  size_t nholes);
int khib_vmcore_ranges(int fd, const char *name, struct khib_range **ranges,
		       size_t *count);
int khib_overlaps(const struct khib_image *image, const struct khib_range *ranges,
		  size_t count, const char *name);
int khib_outside(const struct khib_image *image, const struct khib_range *ranges,
		 size_t count, const char *name);

/*
 * A's memory between 4 KiB and 640 KiB while B runs: B's boot writes its real-mode
 * trampoline there, so B keeps what it found (its kernel patch b/0001) and gives it back
 * when it jumps back; /sys/kernel/kexec_jump_low reads and writes that copy (the offset
 * is the physical address). khib-save and khib-restore take those bytes from it (--low).
 */
#define KHIB_LOW_START 0x1000u
#define KHIB_LOW_END 0xA0000u

/* Physical memory as khib-restore writes it: /dev/mem, and the low copy when given. */
struct khib_phys {
	int mem;
	int low;   /* B's copy of A's 4 KiB-640 KiB, or -1 */
};

/* io.c */
#define KHIB_WINDOW (1u << 20)   /* memory mapped at a time, a multiple of KHIB_PAGE */
typedef int (*khib_mem_fn)(void *context, const unsigned char *data, size_t size,
			   uint64_t paddr);
const unsigned char *khib_mem_map(int fd, uint64_t offset, size_t size);
int khib_mem_unmap(const unsigned char *data, uint64_t offset, size_t size);
int khib_phys_read(const struct khib_phys *phys, uint64_t paddr, uint64_t size,
		   unsigned char *buffer, khib_mem_fn each, void *context);
int khib_pread_full(int fd, void *buffer, size_t size, uint64_t offset);
int khib_pwrite_full(int fd, const void *buffer, size_t size, uint64_t offset);
int khib_mem_copy(int fd, void *buffer, size_t size, uint64_t offset, int to_memory);
int khib_phys_copy(const struct khib_phys *phys, void *buffer, size_t size, uint64_t paddr,
		   int to_memory);
void khib_progress(const char *what, uint64_t done, uint64_t total);
double khib_seconds(void);
int khib_parse_pair(const char *text, uint64_t *first, uint64_t *second);
Elf64_Ehdr khib_core_header(uint16_t machine, uint64_t phoff, uint16_t phnum);

/* export.c: plain ELF cores (PT_LOADs at their physical and direct-map addresses) */
struct khib_load {
	uint64_t paddr;
	uint64_t size;
	uint64_t offset;      /* in the core */
};
uint64_t khib_core_data_start(size_t count, size_t vmcoreinfo_size);
int khib_core_headers(int out, uint16_t machine, const char *vmcoreinfo, size_t vmcoreinfo_size,
		      uint64_t page_offset, const struct khib_load *loads, size_t count);

/* freepages.c */
int khib_find_free_pages(int fd, const struct khib_range *ranges, size_t count,
			 const struct khib_range *all, size_t nall, uint64_t vmcoreinfo,
			 uint64_t vmcoreinfo_size, uint64_t control_page, uint64_t kernel_code,
			 struct khib_free_pages *f);
int khib_page_free(const struct khib_free_pages *f, uint64_t pfn);

/* khib-report.c: A's status page, as B writes it */
struct khib_status_text {   /* text for [at, end) of the page, NUL-terminated, cut to fit */
	const char *text;
	size_t at, end;
};
int khib_status_update(const char *mem_path, const char *handle, const char *who,
		       int (*change)(unsigned char *page, void *context), void *context);
int khib_status_put_text(unsigned char *page, void *context);

/* The programs of the one khib-core binary, chosen by the name it runs as. */
int khib_save_main(int argc, char **argv);
int khib_restore_main(int argc, char **argv);
int khib_jump_back_main(int argc, char **argv);
int khib_report_main(int argc, char **argv);
int khib_other_main(int argc, char **argv);

#endif
