/*
 * khib-restore --export: the old kernel's memory as it had it, as a plain ELF64 core that
 * crash and makedumpfile read: every range in a PT_LOAD (free and zero runs as zeros)
 * whose p_vaddr is its direct-map address, the window's pages put back from where kexec
 * had moved them, and its VMCOREINFO note.  Every block is compared with the digest the
 * check kept before it is written out.
 */
#define _GNU_SOURCE
#include "khib-core.h"
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A PT_LOAD of the export: image segments, or window pages put back. */
struct run {
	uint64_t paddr;
	uint64_t size;
	int window;
};

static int by_paddr(const void *a, const void *b)
{
	const struct run *x = a, *y = b;

	return x->paddr < y->paddr ? -1 : x->paddr > y->paddr;
}

static int add_run(struct run **runs, size_t *count, uint64_t paddr, uint64_t size, int window)
{
	struct run *last = *count ? &(*runs)[*count - 1] : NULL;
	void *grown;

	if (last && last->window == window && last->paddr + last->size == paddr) {
		last->size += size;
		return 0;
	}
	grown = realloc(*runs, (*count + 1) * sizeof(**runs));
	if (!grown)
		return -1;
	*runs = grown;
	(*runs)[(*count)++] = (struct run){paddr, size, window};
	return 0;
}

/* Where paddr's page is in the export (loads sorted), or UINT64_MAX. */
static uint64_t export_offset(const struct khib_load *loads, size_t count, uint64_t paddr)
{
	size_t low = 0, high = count;

	while (low < high) {
		size_t middle = low + (high - low) / 2;
		if (paddr < loads[middle].paddr)
			high = middle;
		else if (paddr - loads[middle].paddr >= loads[middle].size)
			low = middle + 1;
		else
			return loads[middle].offset + (paddr - loads[middle].paddr);
	}
	return UINT64_MAX;
}

/* Where a core's data starts: after its headers and its VMCOREINFO note, page-aligned. */
uint64_t khib_core_data_start(size_t count, size_t vmcoreinfo_size)
{
	uint64_t note = sizeof(Elf64_Ehdr) + ((uint64_t)count + 1) * sizeof(Elf64_Phdr);

	return (note + sizeof(Elf64_Nhdr) + 12 + (uint64_t)vmcoreinfo_size + KHIB_PAGE + 3) &
	       ~(uint64_t)(KHIB_PAGE - 1);
}

/*
 * A plain core's ELF header, its PT_NOTE with the VMCOREINFO text (if any) and a PT_LOAD
 * per load, whose p_vaddr is its direct-map address.  Fewer than KHIB_SEGMENTS_MAX loads
 * (E2BIG): with the note, e_phnum stays below PN_XNUM, which would mean extended
 * numbering.
 */
int khib_core_headers(int out, uint16_t machine, const char *vmcoreinfo, size_t vmcoreinfo_size,
		      uint64_t page_offset, const struct khib_load *loads, size_t count)
{
	uint64_t note = sizeof(Elf64_Ehdr) + ((uint64_t)count + 1) * sizeof(Elf64_Phdr);
	Elf64_Ehdr eh = khib_core_header(machine, sizeof(Elf64_Ehdr), (uint16_t)(count + 1));
	Elf64_Nhdr nhdr = {11, (uint32_t)vmcoreinfo_size, 0};
	Elf64_Phdr ph = {.p_type = PT_NOTE, .p_offset = note,
			 .p_filesz = vmcoreinfo ? sizeof(nhdr) + 12 +
				     ((vmcoreinfo_size + 3) & ~(size_t)3) : 0};

	if (count >= KHIB_SEGMENTS_MAX) {
		errno = E2BIG;
		return -1;
	}
	if (khib_pwrite_full(out, &eh, sizeof(eh), 0) < 0 ||
	    khib_pwrite_full(out, &ph, sizeof(ph), sizeof(eh)) < 0 ||
	    (vmcoreinfo &&
	     (khib_pwrite_full(out, &nhdr, sizeof(nhdr), note) < 0 ||
	      khib_pwrite_full(out, KHIB_VMCOREINFO_NAME "\0", 12, note + sizeof(nhdr)) < 0 ||
	      khib_pwrite_full(out, vmcoreinfo, vmcoreinfo_size, note + sizeof(nhdr) + 12) < 0)))
		return -1;
	for (size_t r = 0; r < count; r++) {
		ph = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X,
				  .p_offset = loads[r].offset, .p_paddr = loads[r].paddr,
				  .p_vaddr = page_offset + loads[r].paddr,
				  .p_filesz = loads[r].size, .p_memsz = loads[r].size,
				  .p_align = KHIB_PAGE};
		if (khib_pwrite_full(out, &ph, sizeof(ph), sizeof(eh) + (r + 1) * sizeof(ph)) < 0)
			return -1;
	}
	return 0;
}

/*
 * The old kernel's memory as it had it, as a plain core: the image's data decompressed
 * in place (zero and free runs stay holes), then each window page copied from where
 * kexec had moved it, which is by then in the export too.
 */
int khib_export_core(int image_fd, const char *name, struct khib_image *image,
		     const char *path, uint16_t machine, unsigned char *buffer)
{
	struct run *runs = NULL;
	struct khib_load *loads = NULL;
	uint64_t offset;
	size_t nruns = 0;
	int out = -1;

	for (size_t i = 0; i < image->count; i++)
		if (add_run(&runs, &nruns, image->segments[i].paddr, image->segments[i].memsz, 0) < 0)
			goto fail;
	for (size_t i = 0; i < image->layout.npairs; i++)
		if (add_run(&runs, &nruns, image->pairs[i].dest, KHIB_PAGE, 1) < 0)
			goto fail;
	qsort(runs, nruns, sizeof(*runs), by_paddr);
	loads = calloc(nruns + 1, sizeof(*loads));
	if (!loads)
		goto fail;
	offset = khib_core_data_start(nruns, image->vmcoreinfo_size);
	for (size_t r = 0; r < nruns; r++) {
		loads[r] = (struct khib_load){runs[r].paddr, runs[r].size, offset};
		offset += runs[r].size;
	}
	out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (out < 0 || fchmod(out, 0600) < 0 ||
	    khib_core_headers(out, machine, image->vmcoreinfo, image->vmcoreinfo_size,
			      image->layout.page_offset, loads, nruns) < 0 ||
	    ftruncate(out, (off_t)offset) < 0)
		goto fail;
	for (size_t i = 0; i < image->count; i++) {
		struct khib_destination to = {out, NULL, export_offset(loads, nruns,
							     image->segments[i].paddr), 0, NULL};
		if (image->segments[i].kind == KHIB_DATA &&
		    khib_segment_blocks(image_fd, name, image, i, 1, put_into, &to) < 0)
			goto fail;
	}
	for (size_t i = 0; i < image->layout.npairs; i++) {
		uint64_t from = export_offset(loads, nruns, image->pairs[i].source);
		uint64_t to = export_offset(loads, nruns, image->pairs[i].dest);
		if (from != UINT64_MAX &&
		    (khib_pread_full(out, buffer, KHIB_PAGE, from) < 0 ||
		     khib_pwrite_full(out, buffer, KHIB_PAGE, to) < 0))
			goto fail;
	}
	if (close(out) < 0) {
		out = -1;
		goto fail;
	}
	printf("khib-restore: %s: a core of %zu ranges, %llu MiB, %zu window pages put back\n",
	       path, nruns, (unsigned long long)((offset - loads[0].offset) >> 20),
	       (size_t)image->layout.npairs);
	free(runs);
	free(loads);
	return 0;
fail:
	fprintf(stderr, "khib-restore: writing %s: %s\n", path, strerror(errno));
	if (out >= 0)
		close(out);
	free(runs);
	free(loads);
	return -1;
}

