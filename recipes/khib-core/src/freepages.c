/*
 * Which of the old kernel's pages are free, found as makedumpfile finds them: from the
 * kernel's own page structures, located through the layout its VMCOREINFO note exports
 * (vmcoreinfo.c reads it).  A free buddy block's head is marked as the layout says and
 * spans 2^page.private pages; struct pages are found through the sections' maps
 * (SPARSEMEM, with or without VMEMMAP) or mem_map (FLATMEM).  The count is checked
 * against what the kernel counted itself: the NR_FREE_PAGES entry (NUMBER(NR_FREE_PAGES),
 * SIZE(atomic_long_t)) of OFFSET(zone.vm_stat) in each of the OFFSET(pglist_data.nr_zones)
 * zones at OFFSET(pglist_data.node_zones), SIZE(zone) apart, of SYMBOL(contig_page_data)
 * (or of each node in SYMBOL(node_data), LENGTH(node_data)).
 *
 * Derived, not exported: the kexec backup list (the entry list of the image kexec loaded,
 * whose source pages hold what the old kernel had in the destination pages while the new
 * one runs there) starts at the control page's KEXEC_CONTROL_CODE_MAX_SIZE + 0x30 on x86_64
 * to 6.13 (CP_PA_BACKUP_PAGES_MAP, relocate_kernel_64.S) and + 0x1c on i386; from 6.14
 * on x86_64 it is in relocate_kernel's data, copied into the control page (oldmem.c); the section map's
 * flags take its low 6 bits (SECTION_FLAGS).
 */
#define _GNU_SOURCE
#include "vmcoreinfo.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_PAGES 1024u
/* The section map's flag bits: SECTION_MAP_LAST_BIT is at most 5 in 6.1 and 6 in 7.2
 * (with ZONE_DEVICE and HugeTLB vmemmap optimization); the kernel keeps the map aligned
 * beyond it. */
#define SECTION_FLAGS 0x3full

/* The virtual address of pfn's struct page, or 0. */
static uint64_t page_struct(struct khib_old_memory *m, const struct khib_kernel_layout *l, uint64_t pfn)
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
	return (map & ~SECTION_FLAGS) + pfn * l->struct_page;
}

/* Sum of NR_FREE_PAGES over the zones of one node. */
static int node_free(struct khib_old_memory *m, const struct khib_kernel_layout *l, uint64_t pgdat,
		     uint64_t *total)
{
	uint64_t nr_zones_at, zones_at, zone_size, vm_stat, index, counter;
	unsigned char bytes[8];
	int32_t nr_zones;

	if (khib_info_need(l, "OFFSET(pglist_data.nr_zones)", &nr_zones_at, NULL, 0) < 0 ||
	    khib_info_need(l, "OFFSET(pglist_data.node_zones)", &zones_at, NULL, 0) < 0 ||
	    khib_info_need(l, "SIZE(zone)", &zone_size, NULL, 0) < 0 ||
	    khib_info_need(l, "OFFSET(zone.vm_stat)", &vm_stat, NULL, 0) < 0 ||
	    khib_info_need(l, "NUMBER(NR_FREE_PAGES)", &index, NULL, 0) < 0 ||
	    khib_info_need(l, "SIZE(atomic_long_t)", &counter, NULL, 0) < 0 || counter > 8 ||
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
static int kernel_count(struct khib_old_memory *m, const struct khib_kernel_layout *l, uint64_t *total)
{
	int64_t pgdat, nodes, length;
	int failed = 0;

	*total = 0;
	if (khib_info_number(l->text, "SYMBOL(contig_page_data)", &pgdat) == 0)
		return node_free(m, l, (uint64_t)pgdat, total);
	if (khib_info_number(l->text, "SYMBOL(node_data)", &nodes) < 0 ||
	    khib_info_number(l->text, "LENGTH(node_data)", &length) < 0)
		return -1;
	for (int64_t n = 0; n < length && n < 1024; n++) {
		uint64_t node = khib_vword(m, (uint64_t)nodes + (uint64_t)n * WORD, &failed);
		if (failed || (node && node_free(m, l, node, total) < 0))
			return -1;
	}
	return 0;
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
static int walk(struct khib_old_memory *m, const struct khib_kernel_layout *l, const struct khib_range *ranges,
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
				uint32_t type = (uint32_t)khib_little(page + l->mapcount, 4);
				uint32_t buddy = (uint32_t)l->buddy;
				uint64_t order;
				if (pfn + i < free_until ||
				    (l->type_byte ? type >> 24 != buddy >> 24 : type != buddy))
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
	struct khib_kernel_layout l = {.who = "A"};
	uint64_t max_pfn = 0, tolerance;
	int status = -1, listed;

	*f = (struct khib_free_pages){0};
	if (!m) {
		snprintf(f->why, sizeof(f->why), "out of memory");
		return -1;
	}
	m->fd = fd;
	m->ranges = ranges;
	m->count = count;
	/* The backup list where kernels to 6.13 keep it; 6.14 on (x86_64) it is found through
	 * the kernel's page tables, after the note, which is then read without it: it must
	 * lie in memory the running kernel does not hold (nothing of it moved). */
	listed = control_page && khib_backup_list(m, control_page, 0, f->why,
						   sizeof(f->why)) == 0;
	f->vmcoreinfo = vmcoreinfo_size && (listed || khib_inside(ranges, count, vmcoreinfo,
							      vmcoreinfo_size)) ?
			khib_read_note(m, vmcoreinfo, vmcoreinfo_size, &f->vmcoreinfo_size) : NULL;
	if (!f->vmcoreinfo) {
		snprintf(f->why, sizeof(f->why), "A's VMCOREINFO note at 0x%llx is unreadable",
			 (unsigned long long)vmcoreinfo);
		goto out;
	}
	l.text = f->vmcoreinfo;
	if (khib_read_layout(m, &l, kernel_code, f->why, sizeof(f->why)) < 0 ||
	    (control_page && !listed && khib_backup_list(m, control_page, 1, f->why,
							 sizeof(f->why)) < 0))
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
	f->page_offset = khib_direct_map(m, &l);
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
