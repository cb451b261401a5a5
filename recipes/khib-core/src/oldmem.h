/*
 * The old kernel's memory as the running kernel can read it (oldmem.c): its RAM ranges
 * through /dev/mem or /proc/vmcore, with the window's pages that kexec moved aside read
 * from where they are, and kernel virtual addresses through its own page tables (x86_64)
 * or its linear direct map (i386).  Or, in the kernel that loaded the image (khib-other
 * in A), B's memory: the window's pages alone, from where the image holds them.  The
 * image's entry list says where they are (kexec-list.c).
 */
#ifndef KHIB_OLDMEM_H
#define KHIB_OLDMEM_H

#include "khib-core.h"

#define CACHE_PAGES 64
#define IND_DESTINATION 0x1u
#define IND_INDIRECTION 0x2u
#define IND_DONE 0x4u
#define IND_SOURCE 0x8u
#define IND_FLAGS 0xfu
#define KEXEC_CONTROL_CODE_MAX_SIZE 2048u
#define KPF_RESERVED 32u   /* /proc/kpageflags: PG_reserved, which kexec sets on its pages */
#if defined(__x86_64__)
#define WORD 8u
#define BACKUP_LIST_AT (KEXEC_CONTROL_CODE_MAX_SIZE + 0x30u)
#define START_KERNEL_MAP 0xffffffff80000000ull
#else
#define WORD 4u
#define BACKUP_LIST_AT (KEXEC_CONTROL_CODE_MAX_SIZE + 0x1cu)
#endif
/*
 * The list's own pages, at most: its control page and its indirection pages.  A kernel's
 * list of KHIB_PAIRS_MAX sources holds at most a destination entry per source, and each
 * indirection page all but one of its entries before the next.
 */
#define LIST_PAGES_MAX (2u * KHIB_PAIRS_MAX / (KHIB_PAGE / WORD - 1u) + 2u)


/* The old kernel's physical memory as the running kernel can read it. */
struct khib_old_memory {
	int fd;
	const struct khib_range *ranges;      /* readable where the old kernel left it */
	size_t count;
	struct khib_pair *window;             /* moved aside by kexec: dest -> source */
	size_t nwindow;
	uint64_t cached_pfn[CACHE_PAGES];
	int cached_valid[CACHE_PAGES];
	unsigned char cache[CACHE_PAGES][KHIB_PAGE];
	uint64_t listing[LIST_PAGES_MAX];     /* the list's own pages (control, indirection) */
	size_t nlisting;
	uint64_t window_start, window_end;    /* nonzero: the list is the running kernel's own
					       * image of B, whose pages lie in this window;
					       * nothing outside them is read */
	int kpageflags;                       /* with the window: /proc/kpageflags */
	uint64_t page_offset;                 /* i386: the direct map */
	uint64_t top_pgt, phys_base, l5, sme_mask;  /* x86_64: the kernel's page tables */
};

int khib_compare_pairs(const void *a, const void *b);
int khib_ram_page(const struct khib_old_memory *m, uint64_t paddr, unsigned char *page);
int khib_old_read(struct khib_old_memory *m, uint64_t paddr, void *buffer, size_t size);
uint64_t khib_old_word(struct khib_old_memory *m, uint64_t paddr, int *failed);
uint64_t khib_vtop(struct khib_old_memory *m, uint64_t vaddr);
int khib_vread(struct khib_old_memory *m, uint64_t vaddr, void *buffer, size_t size);
uint64_t khib_vword(struct khib_old_memory *m, uint64_t vaddr, int *failed);
int64_t khib_little(const unsigned char *bytes, size_t size);
const struct khib_pair *khib_moved(const struct khib_old_memory *m, uint64_t page);
/* kexec-list.c */
int khib_backup_list(struct khib_old_memory *m, uint64_t control_page, int copied_code,
		     char *why, size_t size);
char *khib_read_note(struct khib_old_memory *m, uint64_t paddr, uint64_t size, size_t *length);

#endif
