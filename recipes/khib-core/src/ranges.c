/* Ranges of physical memory: A's RAM, the running kernel's, /proc/vmcore's. */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int add_range(struct khib_range **ranges, size_t *count, uint64_t paddr,
		     uint64_t size, uint64_t offset)
{
	void *grown = realloc(*ranges, (*count + 1) * sizeof(**ranges));

	if (!grown)
		return -1;
	*ranges = grown;
	(*ranges)[(*count)++] = (struct khib_range){paddr, size, offset};
	return 0;
}

/*
 * RAM ranges as A recorded them, or as /proc/iomem lists them: one "start-end" (hex, end
 * inclusive) per line; a line with a " : label" counts only if the label is "System RAM".
 * A "Crash kernel" line (a crashkernel= reservation: RAM the kernel never allocates
 * from) is cut out of them.  On /dev/mem a physical address is its own file offset.
 */
int khib_read_ranges(const char *path, struct khib_range **ranges, size_t *count)
{
	FILE *file = fopen(path, "r");
	struct khib_range *reserved = NULL;
	size_t nreserved = 0;
	char line[256];
	int number = 0, status = -1;

	if (!file) {
		fprintf(stderr, "khib: %s: %s\n", path, strerror(errno));
		return -1;
	}
	*ranges = NULL;
	*count = 0;
	while (fgets(line, sizeof(line), file)) {
		unsigned long long start, end;
		char *label = strchr(line, ':');

		number++;
		if (line[0] == '#' || line[strspn(line, " \t\r\n")] == '\0')
			continue;
		if (sscanf(line, " %llx-%llx", &start, &end) != 2 || end < start) {
			fprintf(stderr, "khib: %s:%d: expected START-END in hex\n", path, number);
			goto out;
		}
		/* A range to the top of the address space: its start + size would wrap to 0 and
		 * every check take it for empty.  Its last byte is left out (no segment reaches
		 * it: a segment's own end would wrap). */
		if (end == ULLONG_MAX) {
			if (start == end)
				continue;
			end--;
		}
		if (label && strstr(label, "Crash kernel")) {
			if (add_range(&reserved, &nreserved, start, end - start + 1, start) < 0)
				goto out;
			continue;
		}
		if (label && !strstr(label, "System RAM"))
			continue;
		if (sizeof(long) == 4 && end >> 44) { /* mmap2 counts pages in 32 bits */
			fprintf(stderr, "khib: %s:%d: 0x%llx is beyond the 16 TiB a 32-bit khib-core "
				"can reach\n", path, number, end);
			goto out;
		}
		if (add_range(ranges, count, start, end - start + 1, start) < 0)
			goto out;
	}
	status = khib_exclude(ranges, count, reserved, nreserved);
out:
	free(reserved);
	fclose(file);
	return status;
}

/*
 * Cut the holes (the running kernel's own RAM, say) out of the ranges; a range split in
 * two keeps its offsets in step with its physical addresses.
 */
int khib_exclude(struct khib_range **ranges, size_t *count, const struct khib_range *holes,
		 size_t nholes)
{
	for (size_t h = 0; h < nholes; h++) {
		struct khib_range *kept = NULL;
		size_t nkept = 0;
		uint64_t cut_start = holes[h].paddr, cut_end = holes[h].paddr + holes[h].size;

		for (size_t r = 0; r < *count; r++) {
			const struct khib_range *range = &(*ranges)[r];
			uint64_t end = range->paddr + range->size;
			int failed = 0;

			if (cut_end <= range->paddr || end <= cut_start) {
				failed = add_range(&kept, &nkept, range->paddr, range->size,
						   range->offset) < 0;
			} else {
				if (range->paddr < cut_start)
					failed = add_range(&kept, &nkept, range->paddr,
							   cut_start - range->paddr, range->offset) < 0;
				if (!failed && cut_end < end)
					failed = add_range(&kept, &nkept, cut_end, end - cut_end,
							   range->offset + (cut_end - range->paddr)) < 0;
			}
			if (failed) {
				free(kept);
				return -1;
			}
		}
		free(*ranges);
		*ranges = kept;
		*count = nkept;
	}
	return 0;
}

int khib_inside(const struct khib_range *ranges, size_t count, uint64_t paddr, uint64_t size)
{
	for (size_t r = 0; r < count; r++)
		if (paddr >= ranges[r].paddr && paddr - ranges[r].paddr <= ranges[r].size &&
		    size <= ranges[r].size - (paddr - ranges[r].paddr))
			return 1;
	return 0;
}

static int by_address(const void *a, const void *b)
{
	const struct khib_range *x = a, *y = b;

	return x->paddr < y->paddr ? -1 : x->paddr > y->paddr;
}

/*
 * khib_exclude() for khib-save --low: the ranges' bytes between KHIB_LOW_START and
 * KHIB_LOW_END are read from B's copy of them instead, so they stay (as ranges whose
 * offset is their physical address, in order among the others) though the holes (B's
 * own RAM, which covers the low memory B booted over) are cut out of the rest.
 */
int khib_take_low(struct khib_range **ranges, size_t *count, const struct khib_range *holes,
		  size_t nholes)
{
	struct khib_range *low = NULL, hole = {KHIB_LOW_START, KHIB_LOW_END - KHIB_LOW_START, 0};
	size_t nlow = 0;
	int status = -1;

	for (size_t r = 0; r < *count; r++) {
		uint64_t start = (*ranges)[r].paddr, end = start + (*ranges)[r].size;
		start = start > KHIB_LOW_START ? start : KHIB_LOW_START;
		end = end < KHIB_LOW_END ? end : KHIB_LOW_END;
		if (start < end && add_range(&low, &nlow, start, end - start, start) < 0)
			goto out;
	}
	if (khib_exclude(ranges, count, &hole, 1) < 0 ||
	    khib_exclude(ranges, count, holes, nholes) < 0)
		goto out;
	for (size_t r = 0; r < nlow; r++)
		if (add_range(ranges, count, low[r].paddr, low[r].size, low[r].offset) < 0)
			goto out;
	qsort(*ranges, *count, sizeof(**ranges), by_address);
	status = 0;
out:
	free(low);
	return status;
}

/* The memory /proc/vmcore exposes: its PT_LOADs, each a physical range at an offset. */
int khib_vmcore_ranges(int fd, const char *name, struct khib_range **ranges, size_t *count)
{
	Elf64_Ehdr header;

	*ranges = NULL;
	*count = 0;
	if (khib_pread_full(fd, &header, sizeof(header), 0) < 0 ||
	    memcmp(header.e_ident, ELFMAG, SELFMAG) || header.e_ident[EI_CLASS] != ELFCLASS64) {
		fprintf(stderr, "khib: %s: not an ELF64 core\n", name);
		return -1;
	}
	for (unsigned i = 0; i < header.e_phnum; i++) {
		Elf64_Phdr phdr;

		if (khib_pread_full(fd, &phdr, sizeof(phdr),
				    header.e_phoff + (uint64_t)i * header.e_phentsize) < 0)
			return -1;
		if (phdr.p_type == PT_LOAD && phdr.p_filesz &&
		    add_range(ranges, count, phdr.p_paddr, phdr.p_filesz, phdr.p_offset) < 0)
			return -1;
	}
	return 0;
}

/* Whether a segment of the image lies in the given ranges (the running kernel's RAM). */
int khib_overlaps(const struct khib_image *image, const struct khib_range *ranges,
		  size_t count, const char *name)
{
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		for (size_t r = 0; r < count; r++) {
			if (s->paddr < ranges[r].paddr + ranges[r].size &&
			    ranges[r].paddr < s->paddr + s->memsz) {
				fprintf(stderr, "khib: %s: segment 0x%llx-0x%llx overlaps this "
					"kernel's own RAM 0x%llx-0x%llx\n", name,
					(unsigned long long)s->paddr,
					(unsigned long long)(s->paddr + s->memsz - 1),
					(unsigned long long)ranges[r].paddr,
					(unsigned long long)(ranges[r].paddr + ranges[r].size - 1));
				return 1;
			}
		}
	}
	return 0;
}


/* Whether a segment of the image lies outside the given ranges (the RAM A had). */
int khib_outside(const struct khib_image *image, const struct khib_range *ranges,
		 size_t count, const char *name)
{
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		size_t r = 0;
		while (r < count && !(ranges[r].paddr <= s->paddr &&
				      s->memsz <= ranges[r].size &&
				      s->paddr - ranges[r].paddr <= ranges[r].size - s->memsz))
			r++;
		if (r == count) {
			fprintf(stderr, "khib: %s: segment 0x%llx-0x%llx lies outside the RAM the "
				"image was saved from\n", name, (unsigned long long)s->paddr,
				(unsigned long long)(s->paddr + s->memsz - 1));
			return 1;
		}
	}
	return 0;
}
