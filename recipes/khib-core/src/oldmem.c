/* The old kernel's memory as the running kernel can read it (see oldmem.h). */
#define _GNU_SOURCE
#include "oldmem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int khib_compare_pairs(const void *a, const void *b)
{
	const struct khib_pair *x = a, *y = b;

	return x->dest < y->dest ? -1 : x->dest > y->dest;
}

const struct khib_pair *khib_moved(const struct khib_old_memory *m, uint64_t page)
{
	struct khib_pair key = {.dest = page};

	return m->nwindow ? bsearch(&key, m->window, m->nwindow, sizeof(key), khib_compare_pairs)
			  : NULL;
}

int khib_ram_page(const struct khib_old_memory *m, uint64_t paddr, unsigned char *page)
{
	for (size_t r = 0; r < m->count; r++) {
		const struct khib_range *range = &m->ranges[r];
		if (paddr >= range->paddr && paddr - range->paddr < range->size)
			return khib_mem_copy(m->fd, page, KHIB_PAGE,
					     range->offset + (paddr - range->paddr), 0);
	}
	errno = EFAULT;
	return -1;
}

/*
 * One page of the old kernel's memory (through the cache), or NULL with errno set: a
 * window page from where kexec moved it, another from where it is; B's memory (with the
 * window) has the window's pages alone.
 */
static const unsigned char *old_page(struct khib_old_memory *m, uint64_t paddr)
{
	uint64_t page = paddr & ~(uint64_t)(KHIB_PAGE - 1);
	size_t slot = (size_t)((page / KHIB_PAGE) % CACHE_PAGES);
	const struct khib_pair *pair = khib_moved(m, page);

	if (m->cached_valid[slot] && m->cached_pfn[slot] == page)
		return m->cache[slot];
	if (!pair && m->window_end) {
		errno = EFAULT;
		return NULL;
	}
	if (khib_ram_page(m, pair ? pair->source : page, m->cache[slot]) < 0)
		return NULL;
	m->cached_pfn[slot] = page;
	m->cached_valid[slot] = 1;
	return m->cache[slot];
}

int khib_old_read(struct khib_old_memory *m, uint64_t paddr, void *buffer, size_t size)
{
	unsigned char *at = buffer;

	while (size) {
		size_t offset = (size_t)(paddr % KHIB_PAGE);
		size_t length = KHIB_PAGE - offset < size ? KHIB_PAGE - offset : size;
		const unsigned char *page = old_page(m, paddr);
		if (!page)
			return -1;
		memcpy(at, page + offset, length);
		at += length;
		paddr += length;
		size -= length;
	}
	return 0;
}

uint64_t khib_old_word(struct khib_old_memory *m, uint64_t paddr, int *failed)
{
	unsigned char bytes[8] = {0};
	uint64_t value = 0;

	if (khib_old_read(m, paddr, bytes, WORD) < 0)
		*failed = 1;
	for (unsigned i = 0; i < WORD; i++)
		value |= (uint64_t)bytes[i] << (8 * i);
	return value;
}

/* A kernel virtual address as a physical one (UINT64_MAX if unmapped). */
uint64_t khib_vtop(struct khib_old_memory *m, uint64_t vaddr)
{
#if defined(__x86_64__)
	static const unsigned shifts[] = {48, 39, 30, 21, 12};
	uint64_t table = m->top_pgt, mask = 0x000ffffffffff000ull & ~m->sme_mask;
	int failed = 0;

	if (vaddr >= START_KERNEL_MAP)
		return vaddr - START_KERNEL_MAP + m->phys_base;
	for (unsigned level = m->l5 ? 0 : 1; level < 5; level++) {
		uint64_t entry = khib_old_word(m, table + ((vaddr >> shifts[level]) & 511u) * 8u,
					  &failed);
		uint64_t span = 1ull << shifts[level];
		if (failed || !(entry & 1u))
			return UINT64_MAX;
		if (level == 4 || ((level == 2 || level == 3) && (entry & 0x80u)))
			return ((entry & mask) & ~(span - 1)) | (vaddr & (span - 1));
		table = entry & mask;
	}
	return UINT64_MAX;
#else
	return vaddr >= m->page_offset ? vaddr - m->page_offset : UINT64_MAX;
#endif
}

/* Read from a kernel virtual address, page by page (a range need not be contiguous). */
int khib_vread(struct khib_old_memory *m, uint64_t vaddr, void *buffer, size_t size)
{
	unsigned char *at = buffer;

	while (size) {
		size_t offset = (size_t)(vaddr % KHIB_PAGE);
		size_t length = KHIB_PAGE - offset < size ? KHIB_PAGE - offset : size;
		uint64_t paddr = khib_vtop(m, vaddr);
		if (paddr == UINT64_MAX || khib_old_read(m, paddr, at, length) < 0)
			return -1;
		at += length;
		vaddr += length;
		size -= length;
	}
	return 0;
}

int64_t khib_little(const unsigned char *bytes, size_t size)
{
	uint64_t value = 0;

	for (size_t i = 0; i < size; i++)
		value |= (uint64_t)bytes[i] << (8 * i);
	if (size < 8 && (value >> (8 * size - 1)) & 1u)
		value |= ~0ull << (8 * size);
	return (int64_t)value;
}

uint64_t khib_vword(struct khib_old_memory *m, uint64_t vaddr, int *failed)
{
	unsigned char bytes[8];

	if (khib_vread(m, vaddr, bytes, WORD) < 0) {
		*failed = 1;
		return 0;
	}
	return (uint64_t)khib_little(bytes, WORD) & (WORD == 8 ? ~0ull : 0xffffffffull);
}

/* The note's descriptor (the VMCOREINFO text) from its ELF note at paddr. */
char *khib_read_note(struct khib_old_memory *m, uint64_t paddr, uint64_t size, size_t *length)
{
	unsigned char header[12];
	uint64_t namesz, descsz;
	char *text;

	if (size < sizeof(header) || size > KHIB_VMCOREINFO_MAX + 64u ||
	    khib_old_read(m, paddr, header, sizeof(header)) < 0)
		return NULL;
	namesz = (uint64_t)khib_little(header, 4) & 0xffffffffu;
	descsz = (uint64_t)khib_little(header + 4, 4) & 0xffffffffu;
	if (namesz != 11 || descsz > KHIB_VMCOREINFO_MAX || 24u + descsz > size)
		return NULL;
	text = calloc(1, (size_t)descsz + 1u);
	if (!text || khib_old_read(m, paddr + 24u, text, (size_t)descsz) < 0) {
		free(text);
		return NULL;
	}
	*length = strnlen(text, (size_t)descsz);
	return text;
}
