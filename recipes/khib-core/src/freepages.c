/*
 * Which of the old kernel's pages are free, found as makedumpfile finds them: from the
 * kernel's own page structures, located through the layout its VMCOREINFO note exports.
 *
 * A free block of the buddy allocator starts at a struct page whose _mapcount (the
 * page_type of kernels before 6.9) equals NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE); it spans
 * 2^page.private pages.  struct pages are found through SYMBOL(mem_section) (SPARSEMEM:
 * roots of LENGTH(mem_section) entries of SIZE(mem_section) bytes, whose
 * OFFSET(mem_section.section_mem_map) holds the section's encoded map, with or without
 * VMEMMAP) or the array SYMBOL(mem_map) points at (FLATMEM), with SIZE(page), OFFSET(page._mapcount),
 * OFFSET(page.private), NUMBER(SECTION_SIZE_BITS) and NUMBER(MAX_PHYSMEM_BITS).  The count
 * is checked against what the kernel counted itself: the NR_FREE_PAGES entry
 * (NUMBER(NR_FREE_PAGES), SIZE(atomic_long_t)) of OFFSET(zone.vm_stat) in each of the
 * OFFSET(pglist_data.nr_zones) zones at OFFSET(pglist_data.node_zones), SIZE(zone) apart,
 * of SYMBOL(contig_page_data) (or of each node in SYMBOL(node_data), LENGTH(node_data)).
 *
 * Kernel addresses become physical ones on x86_64 through the kernel's page tables
 * (SYMBOL(init_top_pgt) at its physical address, NUMBER(phys_base), 4 or 5 levels by
 * NUMBER(pgtable_l5_enabled), without NUMBER(sme_mask)); on i386 the direct map is
 * linear from PAGE_OFFSET, which the note does not export: it is derived as SYMBOL(_stext)
 * less the physical start of A's "Kernel code" (/proc/iomem), where _text == _stext.
 *
 * Derived, not exported: the kexec backup list (the entry list of the image kexec loaded,
 * whose source pages hold what the old kernel had in the destination pages while the new
 * one runs there) starts at the control page's KEXEC_CONTROL_CODE_MAX_SIZE + 0x30 on x86_64
 * (CP_PA_BACKUP_PAGES_MAP, relocate_kernel_64.S) and + 0x1c on i386; the section map's
 * flags take its low 5 bits (SECTION_MAP_LAST_BIT <= 5 on 6.1, the map is aligned beyond).
 */
#define _GNU_SOURCE
#include "oldmem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_PAGES 1024u

struct layout {
	const char *text;
	uint64_t page_size, struct_page, mapcount, private, buddy, max_order;
	uint64_t sections, roots, per_root, section_size, section_map, section_bits, physmem_bits;
	uint64_t mem_map;
	int sparse;
};

static int number(const char *text, const char *key, int64_t *value)
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
static int need(const char *text, const char *key, uint64_t *value, char *why, size_t size)
{
	int64_t found;

	if (number(text, key, &found) < 0) {
		snprintf(why, size, "A's VMCOREINFO has no %s", key);
		return -1;
	}
	*value = (uint64_t)found;
	return 0;
}

/* The virtual address of pfn's struct page, or 0. */
static uint64_t page_struct(struct khib_old_memory *m, const struct layout *l, uint64_t pfn)
{
	uint64_t nr, root, entry, map;
	int failed = 0;

	if (!l->sparse)
		return l->mem_map ? l->mem_map + pfn * l->struct_page : 0;
	nr = pfn >> (l->section_bits - 12);
	if (nr >= l->sections)
		return 0;
	if (l->per_root > 1) {   /* SPARSEMEM_EXTREME: a root points at a page of sections */
		root = khib_vword(m, l->mem_map + nr / l->per_root * WORD, &failed);
		entry = root + nr % l->per_root * l->section_size;
	} else {
		root = l->mem_map;
		entry = l->mem_map + nr * l->section_size;
	}
	if (failed || !root)
		return 0;
	map = khib_vword(m, entry + l->section_map, &failed);
	if (failed || !(map & 1u))   /* SECTION_MARKED_PRESENT */
		return 0;
	return (map & ~0x1full) + pfn * l->struct_page;
}

/* Sum of NR_FREE_PAGES over the zones of one node. */
static int node_free(struct khib_old_memory *m, const struct layout *l, uint64_t pgdat,
		     uint64_t *total)
{
	uint64_t nr_zones_at, zones_at, zone_size, vm_stat, index, counter;
	unsigned char bytes[8];
	int32_t nr_zones;

	if (need(l->text, "OFFSET(pglist_data.nr_zones)", &nr_zones_at, NULL, 0) < 0 ||
	    need(l->text, "OFFSET(pglist_data.node_zones)", &zones_at, NULL, 0) < 0 ||
	    need(l->text, "SIZE(zone)", &zone_size, NULL, 0) < 0 ||
	    need(l->text, "OFFSET(zone.vm_stat)", &vm_stat, NULL, 0) < 0 ||
	    need(l->text, "NUMBER(NR_FREE_PAGES)", &index, NULL, 0) < 0 ||
	    need(l->text, "SIZE(atomic_long_t)", &counter, NULL, 0) < 0 || counter > 8 ||
	    khib_vread(m, pgdat + nr_zones_at, bytes, 4) < 0)
		return -1;
	nr_zones = (int32_t)khib_little(bytes, 4);
	for (int32_t z = 0; z < nr_zones && z < 16; z++) {
		uint64_t at = pgdat + zones_at + (uint64_t)z * zone_size + vm_stat + index * counter;
		if (khib_vread(m, at, bytes, (size_t)counter) < 0)
			return -1;
		*total += (uint64_t)khib_little(bytes, (size_t)counter);
	}
	return 0;
}

/* NR_FREE_PAGES as the old kernel counted it, summed over its zones. */
static int kernel_count(struct khib_old_memory *m, const struct layout *l, uint64_t *total)
{
	int64_t pgdat, nodes, length;
	int failed = 0;

	*total = 0;
	if (number(l->text, "SYMBOL(contig_page_data)", &pgdat) == 0)
		return node_free(m, l, (uint64_t)pgdat, total);
	if (number(l->text, "SYMBOL(node_data)", &nodes) < 0 ||
	    number(l->text, "LENGTH(node_data)", &length) < 0)
		return -1;
	for (int64_t n = 0; n < length && n < 1024; n++) {
		uint64_t node = khib_vword(m, (uint64_t)nodes + (uint64_t)n * WORD, &failed);
		if (failed || (node && node_free(m, l, node, total) < 0))
			return -1;
	}
	return 0;
}

static int release_supported(const char *text, char *why, size_t size)
{
	const char *at = strstr(text, "OSRELEASE=");
	unsigned major = 0, minor = 0;

	if (!at || sscanf(at + 10, "%u.%u", &major, &minor) != 2) {
		snprintf(why, size, "A's VMCOREINFO names no kernel release");
		return -1;
	}
	/* 5.10 to 6.8: _mapcount holds PAGE_BUDDY_MAPCOUNT_VALUE on a free block's head. */
	if (major * 1000u + minor < 5010u || major * 1000u + minor > 6008u) {
		snprintf(why, size, "A runs Linux %u.%u: its free pages are marked in a way this "
			 "khib-save does not read (it reads 5.10 to 6.8)", major, minor);
		return -1;
	}
	return 0;
}

static int read_layout(struct khib_old_memory *m, struct layout *l, uint64_t kernel_code,
		       char *why, size_t size)
{
	const char *t = l->text;
	int64_t value;

	if (release_supported(t, why, size) < 0 ||
	    need(t, "SIZE(page)", &l->struct_page, why, size) < 0 ||
	    need(t, "OFFSET(page._mapcount)", &l->mapcount, why, size) < 0 ||
	    need(t, "OFFSET(page.private)", &l->private, why, size) < 0 ||
	    need(t, "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", &l->buddy, why, size) < 0 ||
	    need(t, "LENGTH(zone.free_area)", &l->max_order, why, size) < 0 ||
	    need(t, "PAGESIZE", &l->page_size, why, size) < 0)
		return -1;
	if (!l->struct_page || l->struct_page > 512) {
		snprintf(why, size, "A's struct page is %llu bytes",
			 (unsigned long long)l->struct_page);
		return -1;
	}
	if (l->page_size != KHIB_PAGE) {
		snprintf(why, size, "A's pages are %llu bytes", (unsigned long long)l->page_size);
		return -1;
	}
#if defined(__x86_64__)
	(void)kernel_code;
	if (need(t, "SYMBOL(init_top_pgt)", &m->top_pgt, why, size) < 0 ||
	    need(t, "NUMBER(phys_base)", &m->phys_base, why, size) < 0)
		return -1;
	m->top_pgt = m->top_pgt - START_KERNEL_MAP + m->phys_base;
	m->l5 = number(t, "NUMBER(pgtable_l5_enabled)", &value) == 0 && value;
	m->sme_mask = number(t, "NUMBER(sme_mask)", &value) == 0 ? (uint64_t)value : 0;
#else
	if (need(t, "SYMBOL(_stext)", &m->page_offset, why, size) < 0)
		return -1;
	if (!kernel_code || kernel_code > m->page_offset) {
		snprintf(why, size, "A's \"Kernel code\" is unknown: its PAGE_OFFSET cannot be "
			 "derived");
		return -1;
	}
	m->page_offset -= kernel_code;
#endif
	l->sparse = number(t, "SYMBOL(mem_section)", &value) == 0;
	if (l->sparse) {
		l->mem_map = (uint64_t)value;
		if (need(t, "LENGTH(mem_section)", &l->roots, why, size) < 0 ||
		    need(t, "SIZE(mem_section)", &l->section_size, why, size) < 0 ||
		    need(t, "OFFSET(mem_section.section_mem_map)", &l->section_map, why, size) < 0 ||
		    need(t, "NUMBER(SECTION_SIZE_BITS)", &l->section_bits, why, size) < 0 ||
		    need(t, "NUMBER(MAX_PHYSMEM_BITS)", &l->physmem_bits, why, size) < 0)
			return -1;
		if (!l->section_size || l->section_bits < 12 || l->physmem_bits < l->section_bits ||
		    l->physmem_bits - l->section_bits > 40) {
			snprintf(why, size, "A's sections are not what SPARSEMEM makes (%llu bytes, "
				 "2^%llu of 2^%llu)", (unsigned long long)l->section_size,
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
	return need(t, "SYMBOL(mem_map)", &l->mem_map, why, size);
}

/* The note's descriptor (the VMCOREINFO text) from its ELF note at paddr. */
static char *read_note(struct khib_old_memory *m, uint64_t paddr, uint64_t size,
		       size_t *length)
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

static void mark_free(struct khib_free_pages *f, uint64_t pfn, uint64_t count)
{
	for (uint64_t p = pfn; p < pfn + count && p < f->npfns; p++)
		f->bitmap[p / 8] |= (unsigned char)(1u << (p % 8));
}

int khib_page_free(const struct khib_free_pages *f, uint64_t pfn)
{
	return f->bitmap && pfn < f->npfns && (f->bitmap[pfn / 8] >> (pfn % 8)) & 1u;
}

/* Walk the struct pages of every pfn in the ranges, marking the free buddy blocks. */
static int walk(struct khib_old_memory *m, const struct layout *l, const struct khib_range *ranges,
		size_t count, struct khib_free_pages *f)
{
	unsigned char *batch = malloc(BATCH_PAGES * (size_t)l->struct_page);
	uint64_t free_until = 0;

	if (!batch)
		return -1;
	for (size_t r = 0; r < count; r++) {
		uint64_t pfn = ranges[r].paddr / KHIB_PAGE;
		uint64_t end = (ranges[r].paddr + ranges[r].size) / KHIB_PAGE;
		while (pfn < end) {
			uint64_t n = end - pfn < BATCH_PAGES ? end - pfn : BATCH_PAGES;
			uint64_t first = page_struct(m, l, pfn);
			if (l->sparse) {   /* one section at a time: their maps are apart */
				uint64_t per = 1ull << (l->section_bits - 12);
				uint64_t left = per - pfn % per;
				n = n < left ? n : left;
			}
			if (!first || khib_vread(m, first, batch, (size_t)(n * l->struct_page)) < 0) {
				pfn += n;   /* no struct pages: nothing known free here */
				continue;
			}
			for (uint64_t i = 0; i < n; i++) {
				const unsigned char *page = batch + i * l->struct_page;
				int32_t type = (int32_t)khib_little(page + l->mapcount, 4);
				uint64_t order;
				if (pfn + i < free_until || type != (int32_t)l->buddy)
					continue;
				order = (uint64_t)khib_little(page + l->private, WORD);
				if (order >= l->max_order)
					continue;
				mark_free(f, pfn + i, 1ull << order);
				f->counted += 1ull << order;
				free_until = pfn + i + (1ull << order);
			}
			pfn += n;
		}
	}
	free(batch);
	return 0;
}

int khib_find_free_pages(int fd, const struct khib_range *ranges, size_t count,
			 const struct khib_range *all, size_t nall, uint64_t vmcoreinfo,
			 uint64_t vmcoreinfo_size, uint64_t control_page, uint64_t kernel_code,
			 struct khib_free_pages *f)
{
	struct khib_old_memory *m = calloc(1, sizeof(*m));
	struct layout l = {0};
	uint64_t max_pfn = 0, tolerance;
	int status = -1;

	*f = (struct khib_free_pages){0};
	if (!m) {
		snprintf(f->why, sizeof(f->why), "out of memory");
		return -1;
	}
	m->fd = fd;
	m->ranges = ranges;
	m->count = count;
	if (control_page && khib_backup_list(m, control_page, f->why, sizeof(f->why)) < 0)
		goto out;
	qsort(m->window, m->nwindow, sizeof(*m->window), khib_compare_pairs);
	f->vmcoreinfo = read_note(m, vmcoreinfo, vmcoreinfo_size, &f->vmcoreinfo_size);
	if (!f->vmcoreinfo) {
		snprintf(f->why, sizeof(f->why), "A's VMCOREINFO note at 0x%llx is unreadable",
			 (unsigned long long)vmcoreinfo);
		goto out;
	}
	l.text = f->vmcoreinfo;
	if (read_layout(m, &l, kernel_code, f->why, sizeof(f->why)) < 0)
		goto out;
	if (!l.sparse) {   /* SYMBOL(mem_map) is the pointer's address */
		int failed = 0;
		l.mem_map = khib_vword(m, l.mem_map, &failed);
		if (failed || !l.mem_map) {
			snprintf(f->why, sizeof(f->why), "A's mem_map is unreadable");
			goto out;
		}
	}
	for (size_t r = 0; r < nall; r++)
		if ((all[r].paddr + all[r].size) / KHIB_PAGE > max_pfn)
			max_pfn = (all[r].paddr + all[r].size) / KHIB_PAGE;
	f->npfns = max_pfn;
	if (max_pfn > ((uint64_t)SIZE_MAX - 7u) || max_pfn >> 40) {   /* 4 EiB of RAM: no */
		snprintf(f->why, sizeof(f->why), "A's RAM ends at pfn 0x%llx",
			 (unsigned long long)max_pfn);
		goto out;
	}
	f->bitmap = calloc(1, (size_t)((max_pfn + 7) / 8));
	if (!f->bitmap || walk(m, &l, all, nall, f) < 0) {
		snprintf(f->why, sizeof(f->why), "out of memory");
		goto out;
	}
	if (kernel_count(m, &l, &f->kernel_count) < 0) {
		snprintf(f->why, sizeof(f->why), "A's own count of free pages is unreadable");
		goto out;
	}
	/* Per-CPU counter deltas not yet folded in: a percent and a few batches. */
	tolerance = f->kernel_count / 100 + 1024;
	if (f->counted > f->kernel_count + tolerance || f->counted + tolerance < f->kernel_count) {
		snprintf(f->why, sizeof(f->why), "the walk found %llu free pages, A counted %llu",
			 (unsigned long long)f->counted, (unsigned long long)f->kernel_count);
		goto out;
	}
	/* A source page holds what its window page had: free there, free here. */
	for (size_t i = 0; i < m->nwindow; i++)
		if (khib_page_free(f, m->window[i].dest / KHIB_PAGE))
			mark_free(f, m->window[i].source / KHIB_PAGE, 1);
#if defined(__x86_64__)
	/* The direct map's offset, as export needs it: the sections' roots live there. */
	f->page_offset = l.sparse && khib_vtop(m, l.mem_map) != UINT64_MAX ?
			 l.mem_map - khib_vtop(m, l.mem_map) : 0;
#else
	f->page_offset = m->page_offset;
#endif
	status = 0;
out:
	f->window = m->window;
	f->nwindow = m->nwindow;
	if (status) {
		free(f->bitmap);
		f->bitmap = NULL;
	}
	free(m);
	return status;
}
