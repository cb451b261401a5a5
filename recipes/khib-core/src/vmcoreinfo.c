/*
 * The old kernel's layout, read from its VMCOREINFO note: what the free-page walk
 * (freepages.c) needs, each value as the note exports it, never assumed.
 *
 * A free block of the buddy allocator starts at a struct page whose page_type (the union
 * OFFSET(page._mapcount) locates) is marked as NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) says; it
 * spans 2^page.private pages.  The marker's meaning is the release's: from 5.10 to 6.11
 * the whole word equals the value (~PG_buddy, -129: hugetlb and slab pages, types since
 * 6.9 and 6.10, carry other values); from 6.12 the type is the word's top byte (the value
 * is PGTY_buddy << 24, its low 24 bits zero; the rest of the word may hold other data).
 * Releases outside 5.10-7.2 are not walked: their pages are stored.  struct pages are
 * found through SYMBOL(mem_section) (SPARSEMEM: roots of LENGTH(mem_section) entries of
 * SIZE(mem_section) bytes, whose OFFSET(mem_section.section_mem_map) holds the section's
 * encoded map, with or without VMEMMAP) or the array SYMBOL(mem_map) points at (FLATMEM),
 * with SIZE(page), OFFSET(page.private), NUMBER(SECTION_SIZE_BITS) and
 * NUMBER(MAX_PHYSMEM_BITS).
 *
 * Kernel addresses become physical ones on x86_64 through the kernel's page tables
 * (SYMBOL(init_top_pgt) at its physical address, NUMBER(phys_base), 4 or 5 levels by
 * NUMBER(pgtable_l5_enabled), without NUMBER(sme_mask)), whatever KASLR chose; on i386 the
 * direct map is linear from PAGE_OFFSET, which the note does not export: it is derived as
 * SYMBOL(_stext) less the physical start of A's "Kernel code" (/proc/iomem), where
 * _text == _stext.
 */
#define _GNU_SOURCE
#include "vmcoreinfo.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int khib_info_number(const char *text, const char *key, int64_t *value)
{
	size_t length = strlen(key);

	for (const char *at = text; (at = strstr(at, key)); at += length) {
		if ((at == text || at[-1] == '\n') && at[length] == '=') {
			char *end;
			int hex = !strncmp(key, "SYMBOL(", 7) || !strcmp(key, "KERNELOFFSET");
			errno = 0;
			*value = hex ? (int64_t)strtoull(at + length + 1, &end, 16)
				     : strtoll(at + length + 1, &end, 10);
			return errno || (*end != '\n' && *end != '\0') ? -1 : 0;
		}
	}
	return -1;
}

/* A value the note must export, as an unsigned number; 0 and a message when it does not. */
int khib_info_need(const struct khib_kernel_layout *l, const char *key, uint64_t *value,
		   char *why, size_t size)
{
	int64_t found;

	if (khib_info_number(l->text, key, &found) < 0) {
		snprintf(why, size, "%s's VMCOREINFO has no %s", l->who, key);
		return -1;
	}
	*value = (uint64_t)found;
	return 0;
}

/* Whether the release's free-page marker is known (5.10 to 7.2), and how to read it. */
static int release_supported(const char *text, struct khib_kernel_layout *l, char *why, size_t size)
{
	const char *at = strstr(text, "OSRELEASE=");
	unsigned major = 0, minor = 0;

	if (!at || sscanf(at + 10, "%u.%u", &major, &minor) != 2) {
		snprintf(why, size, "%s's VMCOREINFO names no kernel release", l->who);
		return -1;
	}
	if (major * 1000u + minor < 5010u || major * 1000u + minor > 7002u) {
		snprintf(why, size, "%s runs Linux %u.%u: its free pages are marked in a way khib "
			 "does not read (it reads 5.10 to 7.2)", l->who, major, minor);
		return -1;
	}
	l->release = major * 1000u + minor;
	l->type_byte = l->release >= 6012u;
	return 0;
}

int khib_read_layout(struct khib_old_memory *m, struct khib_kernel_layout *l, uint64_t kernel_code,
		       char *why, size_t size)
{
	const char *t = l->text;
	int64_t value;

	if (release_supported(t, l, why, size) < 0 ||
	    khib_info_need(l, "SIZE(page)", &l->struct_page, why, size) < 0 ||
	    khib_info_need(l, "OFFSET(page._mapcount)", &l->mapcount, why, size) < 0 ||
	    khib_info_need(l, "OFFSET(page.private)", &l->private, why, size) < 0 ||
	    khib_info_need(l, "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", &l->buddy, why, size) < 0 ||
	    khib_info_need(l, "LENGTH(zone.free_area)", &l->max_order, why, size) < 0 ||
	    khib_info_need(l, "PAGESIZE", &l->page_size, why, size) < 0)
		return -1;
	if (!l->struct_page || l->struct_page > 512) {
		snprintf(why, size, "%s's struct page is %llu bytes", l->who,
			 (unsigned long long)l->struct_page);
		return -1;
	}
	if (l->type_byte && (l->buddy & 0xffffffu)) {
		snprintf(why, size, "%s's buddy marker 0x%llx is not a page type in the top byte",
			 l->who, (unsigned long long)(l->buddy & 0xffffffffu));
		return -1;
	}
	if (l->page_size != KHIB_PAGE) {
		snprintf(why, size, "%s's pages are %llu bytes", l->who,
			 (unsigned long long)l->page_size);
		return -1;
	}
#if defined(__x86_64__)
	(void)kernel_code;
	if (khib_info_need(l, "SYMBOL(init_top_pgt)", &m->top_pgt, why, size) < 0 ||
	    khib_info_need(l, "NUMBER(phys_base)", &m->phys_base, why, size) < 0)
		return -1;
	m->top_pgt = m->top_pgt - START_KERNEL_MAP + m->phys_base;
	m->l5 = khib_info_number(t, "NUMBER(pgtable_l5_enabled)", &value) == 0 && value;
	m->sme_mask = khib_info_number(t, "NUMBER(sme_mask)", &value) == 0 ? (uint64_t)value : 0;
#else
	if (khib_info_need(l, "SYMBOL(_stext)", &m->page_offset, why, size) < 0)
		return -1;
	if (!kernel_code || kernel_code > m->page_offset) {
		snprintf(why, size, "%s's \"Kernel code\" is unknown: its PAGE_OFFSET cannot be "
			 "derived", l->who);
		return -1;
	}
	m->page_offset -= kernel_code;
#endif
	l->sparse = khib_info_number(t, "SYMBOL(mem_section)", &value) == 0;
	if (l->sparse) {
		l->mem_map = (uint64_t)value;
		if (khib_info_need(l, "LENGTH(mem_section)", &l->roots, why, size) < 0 ||
		    khib_info_need(l, "SIZE(mem_section)", &l->section_size, why, size) < 0 ||
		    khib_info_need(l, "OFFSET(mem_section.section_mem_map)", &l->section_map, why, size) < 0 ||
		    khib_info_need(l, "NUMBER(SECTION_SIZE_BITS)", &l->section_bits, why, size) < 0 ||
		    khib_info_need(l, "NUMBER(MAX_PHYSMEM_BITS)", &l->physmem_bits, why, size) < 0)
			return -1;
		if (!l->section_size || l->section_bits < 12 || l->physmem_bits < l->section_bits ||
		    l->physmem_bits - l->section_bits > 40) {
			snprintf(why, size, "%s's sections are not what SPARSEMEM makes (%llu bytes, "
				 "2^%llu of 2^%llu)", l->who, (unsigned long long)l->section_size,
				 (unsigned long long)l->section_bits,
				 (unsigned long long)l->physmem_bits);
			return -1;
		}
		/* SPARSEMEM_EXTREME: LENGTH counts roots of a page of sections each. */
		l->sections = 1ull << (l->physmem_bits - l->section_bits);
		l->per_root = KHIB_PAGE / l->section_size;
		if (l->roots * l->per_root != l->sections)
			l->per_root = 1;
		return 0;
	}
	return khib_info_need(l, "SYMBOL(mem_map)", &l->mem_map, why, size);
}

/* The direct map's offset (vaddr = paddr + it), as a core's PT_LOADs need it; 0 if unknown. */
uint64_t khib_direct_map(struct khib_old_memory *m, const struct khib_kernel_layout *l)
{
#if defined(__x86_64__)
	/* The sections' roots live there. */
	return l->sparse && khib_vtop(m, l->mem_map) != UINT64_MAX ?
	       l->mem_map - khib_vtop(m, l->mem_map) : 0;
#else
	(void)l;
	return m->page_offset;
#endif
}
