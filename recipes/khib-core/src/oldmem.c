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

/* One page of the old kernel's memory (through the cache), or NULL with errno set. */
static const unsigned char *old_page(struct khib_old_memory *m, uint64_t paddr)
{
	uint64_t page = paddr & ~(uint64_t)(KHIB_PAGE - 1);
	size_t slot = (size_t)((page / KHIB_PAGE) % CACHE_PAGES);
	const struct khib_pair *pair = khib_moved(m, page);
	uint64_t from = pair ? pair->source : page;

	if (m->cached_valid[slot] && m->cached_pfn[slot] == page)
		return m->cache[slot];
	for (size_t r = 0; r < m->count; r++) {
		const struct khib_range *range = &m->ranges[r];
		if (from >= range->paddr && from - range->paddr < range->size) {
			if (khib_mem_copy(m->fd, m->cache[slot], KHIB_PAGE,
					  range->offset + (from - range->paddr), 0) < 0)
				return NULL;
			m->cached_pfn[slot] = page;
			m->cached_valid[slot] = 1;
			return m->cache[slot];
		}
	}
	errno = EFAULT;
	return NULL;
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

/* The list of kexec entries whose first word is at ``at``, if it reads as one. */
static int read_list(struct khib_old_memory *m, uint64_t at)
{
	int failed = 0;
	uint64_t entry = khib_old_word(m, at, &failed), dest = 0;
	uint64_t list = 0, index = 0;
	size_t capacity = 0;

	m->nwindow = 0;
	for (unsigned long steps = 0; !failed && steps < (1ul << 24); steps++) {
		uint64_t page = entry & ~(uint64_t)(KHIB_PAGE - 1);
		if (entry & IND_DONE)
			return 0;
		if (entry & IND_DESTINATION) {
			dest = page;
		} else if (entry & IND_INDIRECTION) {
			list = page;
			index = 0;
		} else if (entry & IND_SOURCE) {
			if (m->nwindow == capacity) {
				void *grown;
				capacity = capacity ? 2 * capacity : 4096;
				grown = realloc(m->window, capacity * sizeof(*m->window));
				if (!grown)
					break;
				m->window = grown;
			}
			m->window[m->nwindow++] = (struct khib_pair){dest, page};
			dest += KHIB_PAGE;
		}
		if (!list || index >= KHIB_PAGE / WORD)
			break;
		entry = khib_old_word(m, list + WORD * index++, &failed);
	}
	m->nwindow = 0;
	return -1;
}

/*
 * A list to trust: some pairs (a preserve_context load moves pages), every window page
 * (destination) in the running kernel's memory, each once (or, read by the kernel that
 * loaded the image, every one in the window and every source in its RAM); sorted by
 * destination. (A
 * source may be a window page too: kexec uses a free page that is its own destination,
 * or one it moves along.) Then nothing read before the list (through no list) stays
 * cached.
 */
static int sane(struct khib_old_memory *m)
{
	if (!m->nwindow)
		return 0;
	qsort(m->window, m->nwindow, sizeof(*m->window), khib_compare_pairs);
	for (size_t i = 0; i < m->nwindow; i++) {
		uint64_t dest = m->window[i].dest;
		int placed = m->window_end ? dest >= m->window_start && dest < m->window_end &&
					     khib_inside(m->ranges, m->count, m->window[i].source,
							 KHIB_PAGE)
					   : !khib_inside(m->ranges, m->count, dest, 1);
		if (!placed || (i && dest == m->window[i - 1].dest))
			return 0;
	}
	memset(m->cached_valid, 0, sizeof(m->cached_valid));
	return 1;
}

int khib_backup_list(struct khib_old_memory *m, uint64_t control_page, int copied_code,
		     char *why, size_t size)
{
	/* To 6.13, and on i386: CP_PA_BACKUP_PAGES_MAP, after the control code. */
	if (!copied_code && read_list(m, control_page + BACKUP_LIST_AT) == 0 && sane(m))
		return 0;
#if defined(__x86_64__)
	/*
	 * 6.14 on, x86_64: the control page starts with a copy of relocate_kernel's text and
	 * data (at most KEXEC_CONTROL_CODE_MAX_SIZE), the data being saved_rsp, saved_cr0,
	 * saved_cr3, saved_cr4, kexec_va_control_page, kexec_pa_table_page,
	 * kexec_pa_swap_page, pa_backup_pages_map, 8 bytes each, after text of no fixed
	 * length. The data is where kexec_va_control_page maps, through A's own page tables,
	 * to the control page itself; pa_backup_pages_map is then 24 bytes on.
	 */
	for (uint64_t at = 0; copied_code && at + 64 <= KEXEC_CONTROL_CODE_MAX_SIZE; at += 8) {
		int failed = 0;
		uint64_t va = khib_old_word(m, control_page + at + 32, &failed);
		if (!failed && va && !(va & (KHIB_PAGE - 1)) && khib_vtop(m, va) == control_page &&
		    read_list(m, control_page + at + 56) == 0 && sane(m) &&
		    khib_vtop(m, va) == control_page)   /* again, through the list */
			return 0;
	}
#endif
	m->nwindow = 0;
	snprintf(why, size, "the kexec backup list in the control page at 0x%llx is unreadable, "
		 "unterminated or not the window's", (unsigned long long)control_page);
	return -1;
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
