/*
 * khib-restore: put a khib image back into memory, or export it as a plain core.
 *
 *   khib-restore IMAGE --check [--key FILE]      check the image against its seal
 *   khib-restore IMAGE --mem /dev/mem [--running /proc/iomem] [--key FILE]
 *        check the whole image first (every CRC-32, the SHA-256 seal, with --key its
 *        HMAC) and that no segment lies in the running kernel's own RAM (the System RAM
 *        --running lists, less a crashkernel= reservation); only then write every segment
 *        back (zeros for zero and free runs), and verify it
 *   khib-restore IMAGE --mem /dev/mem --verify   only compare memory with the image
 *   khib-restore IMAGE --export OUT [--key FILE]
 *        the old kernel's memory as it had it, as a plain ELF64 core that crash and
 *        makedumpfile read: every range in a PT_LOAD (free and zero runs as zeros) whose
 *        p_vaddr is its direct-map address, the window's pages put back from where kexec
 *        had moved them, and its VMCOREINFO note
 */
#define _GNU_SOURCE
#include "khib-image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static int usage(void)
{
	fprintf(stderr, "usage: khib-restore IMAGE (--check | --mem FILE [--running IOMEM] "
		"[--verify] | --export OUT) [--key FILE]\n");
	return 2;
}

/* Where decompressed blocks go: memory (a physical address) or a file (an offset). */
struct destination {
	int fd;
	uint64_t base;
	int memory;
};

static int put_block(void *context, const unsigned char *data, size_t size, uint64_t at)
{
	const struct destination *to = context;

	return to->memory ? khib_mem_copy(to->fd, (void *)data, size, to->base + at, 1)
			  : khib_pwrite_full(to->fd, data, size, to->base + at);
}

static int write_back(int image_fd, const char *name, int mem, const struct khib_image *image,
		      unsigned char *buffer)
{
	memset(buffer, 0, CHUNK);
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		struct destination to = {mem, s->paddr, 1};
		if (s->kind == KHIB_DATA) {
			if (khib_segment_blocks(image_fd, name, image, i, NULL, put_block, &to) < 0)
				goto fail;
			continue;
		}
		for (uint64_t at = 0; at < s->memsz;) {   /* zero and free runs: zeros */
			size_t length = s->memsz - at < CHUNK ? (size_t)(s->memsz - at) : CHUNK;
			if (khib_mem_copy(mem, buffer, length, s->paddr + at, 1) < 0)
				goto fail;
			at += length;
		}
	}
	return 0;
fail:
	fprintf(stderr, "khib-restore: writing the old kernel's memory: %s\n", strerror(errno));
	return -1;
}

/* Compare memory with the image (CRC-32s, zeros); the number of segments that differ. */
static long verify(int mem, const struct khib_image *image, unsigned char *buffer)
{
	long bad = 0;

	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		uint32_t crc = 0;
		for (uint64_t at = 0; at < s->memsz;) {
			size_t length = s->memsz - at < CHUNK ? (size_t)(s->memsz - at) : CHUNK;
			if (khib_mem_copy(mem, buffer, length, s->paddr + at, 0) < 0) {
				fprintf(stderr, "khib-restore: reading 0x%llx: %s\n",
					(unsigned long long)(s->paddr + at), strerror(errno));
				return -1;
			}
			if (s->kind == KHIB_DATA)
				crc = khib_crc32(crc, buffer, length);
			else if (!khib_is_zero(buffer, length))
				crc = ~s->crc32;
			at += length;
		}
		if (crc != s->crc32) {
			fprintf(stderr, "khib-restore: 0x%llx-0x%llx differs from the image\n",
				(unsigned long long)s->paddr,
				(unsigned long long)(s->paddr + s->memsz - 1));
			bad++;
		}
	}
	return bad;
}

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

/* Where paddr's page is in the export (runs sorted, offsets in step), or UINT64_MAX. */
static uint64_t export_offset(const struct run *runs, const uint64_t *offsets, size_t count,
			      uint64_t paddr)
{
	size_t low = 0, high = count;

	while (low < high) {
		size_t middle = low + (high - low) / 2;
		if (paddr < runs[middle].paddr)
			high = middle;
		else if (paddr - runs[middle].paddr >= runs[middle].size)
			low = middle + 1;
		else
			return offsets[middle] + (paddr - runs[middle].paddr);
	}
	return UINT64_MAX;
}

/* The ELF header, the PT_NOTE with VMCOREINFO and a PT_LOAD per run. */
static int export_headers(int out, const struct khib_image *image, uint16_t machine,
			  const struct run *runs, const uint64_t *offsets, size_t nruns,
			  uint64_t note)
{
	Elf64_Ehdr eh = khib_core_header(machine, sizeof(Elf64_Ehdr), (uint16_t)(nruns + 1));
	Elf64_Nhdr nhdr = {11, (uint32_t)image->vmcoreinfo_size, 0};
	Elf64_Phdr ph = {.p_type = PT_NOTE, .p_offset = note,
			 .p_filesz = image->vmcoreinfo ? sizeof(nhdr) + 12 +
				     ((image->vmcoreinfo_size + 3) & ~(size_t)3) : 0};

	if (khib_pwrite_full(out, &eh, sizeof(eh), 0) < 0 ||
	    khib_pwrite_full(out, &ph, sizeof(ph), sizeof(eh)) < 0 ||
	    (image->vmcoreinfo &&
	     (khib_pwrite_full(out, &nhdr, sizeof(nhdr), note) < 0 ||
	      khib_pwrite_full(out, KHIB_VMCOREINFO_NAME "\0", 12, note + sizeof(nhdr)) < 0 ||
	      khib_pwrite_full(out, image->vmcoreinfo, image->vmcoreinfo_size,
			       note + sizeof(nhdr) + 12) < 0)))
		return -1;
	for (size_t r = 0; r < nruns; r++) {
		ph = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X,
				  .p_offset = offsets[r], .p_paddr = runs[r].paddr,
				  .p_vaddr = image->layout.page_offset + runs[r].paddr,
				  .p_filesz = runs[r].size, .p_memsz = runs[r].size,
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
static int export_core(int image_fd, const char *name, const struct khib_image *image,
		       const char *path, uint16_t machine, unsigned char *buffer)
{
	struct run *runs = NULL;
	uint64_t *offsets = NULL, note, offset;
	size_t nruns = 0;
	int out = -1;

	for (size_t i = 0; i < image->count; i++)
		if (add_run(&runs, &nruns, image->segments[i].paddr, image->segments[i].memsz, 0) < 0)
			goto fail;
	for (size_t i = 0; i < image->layout.npairs; i++)
		if (add_run(&runs, &nruns, image->pairs[i].dest, KHIB_PAGE, 1) < 0)
			goto fail;
	qsort(runs, nruns, sizeof(*runs), by_paddr);
	offsets = calloc(nruns + 1, sizeof(*offsets));
	if (!offsets || nruns + 1 > 0xfffe)
		goto fail;
	note = sizeof(Elf64_Ehdr) + (nruns + 1) * sizeof(Elf64_Phdr);
	offset = (note + sizeof(Elf64_Nhdr) + 12 + image->vmcoreinfo_size + KHIB_PAGE + 3) &
		 ~(uint64_t)(KHIB_PAGE - 1);
	for (size_t r = 0; r < nruns; r++) {
		offsets[r] = offset;
		offset += runs[r].size;
	}
	out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (out < 0 || ftruncate(out, (off_t)offset) < 0 ||
	    export_headers(out, image, machine, runs, offsets, nruns, note) < 0)
		goto fail;
	for (size_t i = 0; i < image->count; i++) {
		struct destination to = {out, export_offset(runs, offsets, nruns,
							     image->segments[i].paddr), 0};
		if (image->segments[i].kind == KHIB_DATA &&
		    khib_segment_blocks(image_fd, name, image, i, NULL, put_block, &to) < 0)
			goto fail;
	}
	for (size_t i = 0; i < image->layout.npairs; i++) {
		uint64_t from = export_offset(runs, offsets, nruns, image->pairs[i].source);
		uint64_t to = export_offset(runs, offsets, nruns, image->pairs[i].dest);
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
	       path, nruns, (unsigned long long)((offset - note) >> 20),
	       (size_t)image->layout.npairs);
	free(runs);
	free(offsets);
	return 0;
fail:
	fprintf(stderr, "khib-restore: writing %s: %s\n", path, strerror(errno));
	if (out >= 0)
		close(out);
	free(runs);
	free(offsets);
	return -1;
}

/* Nothing is written before the whole image is checked and found to fit around us. */
static int safe_to_write(int image_fd, const char *image_path, const struct khib_image *image,
			 const char *running, const struct khib_key *key)
{
	struct khib_range *own = NULL;
	size_t nown = 0;
	int overlaps;

	if (khib_check_image(image_fd, image_path, image, key) != 0)
		return 0;
	if (!running)
		return 1;
	if (khib_read_ranges(running, &own, &nown) < 0)
		return 0;
	overlaps = khib_overlaps(image, own, nown, image_path);
	free(own);
	return !overlaps;
}

int khib_restore_main(int argc, char **argv)
{
	const char *image_path = NULL, *mem_path = NULL, *export = NULL, *running = NULL;
	const char *key_path = NULL;
	int verify_only = 0, check_only = 0, status = 1;
	struct khib_image image;
	struct khib_key key = {0};
	uint16_t machine;
	unsigned char *buffer = malloc(CHUNK);
	double started = khib_seconds();
	FILE *file;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem_path = argv[++i];
		else if (!strcmp(argv[i], "--running") && i + 1 < argc)
			running = argv[++i];
		else if (!strcmp(argv[i], "--export") && i + 1 < argc)
			export = argv[++i];
		else if (!strcmp(argv[i], "--key") && i + 1 < argc)
			key_path = argv[++i];
		else if (!strcmp(argv[i], "--verify"))
			verify_only = 1;
		else if (!strcmp(argv[i], "--check"))
			check_only = 1;
		else if (argv[i][0] != '-' && !image_path)
			image_path = argv[i];
		else
			return usage();
	}
	if (!buffer || !image_path || !!mem_path + !!export + check_only != 1 ||
	    (verify_only && !mem_path))
		return usage();
	if (key_path && khib_read_key(key_path, &key) < 0)
		return 1;
	file = fopen(image_path, "rb");
	if (!file) {
		fprintf(stderr, "khib-restore: %s: %s\n", image_path, strerror(errno));
		return 1;
	}
	if (khib_read_image(file, image_path, &image, &machine) < 0) {
		if (mem_path && !verify_only)
			fprintf(stderr, "khib-restore: %s: nothing written\n", image_path);
		fclose(file);
		return 1;
	}
	if (check_only) {
		status = khib_check_image(fileno(file), image_path, &image, &key) != 0;
		if (!status)
			printf("khib-restore: %s: %zu segments checked, the seal holds%s\n", image_path,
			       image.count, key.set ? " (keyed)" : "");
	} else if (export) {
		status = khib_check_image(fileno(file), image_path, &image, &key) != 0 ||
			 export_core(fileno(file), image_path, &image, export, machine, buffer) < 0;
	} else if (verify_only ||
		   safe_to_write(fileno(file), image_path, &image, running, &key)) {
		int mem = open(mem_path, verify_only ? O_RDONLY : O_RDWR);
		long bad;
		if (mem < 0) {
			fprintf(stderr, "khib-restore: %s: %s\n", mem_path, strerror(errno));
		} else if (verify_only || write_back(fileno(file), image_path, mem, &image, buffer) == 0) {
			bad = verify(mem, &image, buffer);
			if (bad == 0)
				printf("khib-restore: %zu segments %s and verified in %.1f s\n",
				       image.count, verify_only ? "compared" : "written",
				       khib_seconds() - started);
			status = bad != 0;
		}
		if (mem >= 0)
			close(mem);
	} else {
		fprintf(stderr, "khib-restore: %s: nothing written\n", image_path);
	}
	khib_free(&image);
	free(buffer);
	fclose(file);
	return status;
}
