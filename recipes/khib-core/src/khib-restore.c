/*
 * khib-restore: put a khib image back into memory, or make it loadable by kexec.
 *
 *   khib-restore IMAGE --check                   check the image against its checksums
 *   khib-restore IMAGE --mem /dev/mem [--running /proc/iomem]
 *        check the whole image first (every CRC-32 and the SHA-256 seal) and that no
 *        segment lies in the running kernel's own RAM (the System RAM --running lists,
 *        less a crashkernel= reservation); only then write every segment back, and
 *        verify it
 *   khib-restore IMAGE --mem /dev/mem --verify   only compare memory with the image
 *   khib-restore IMAGE --resume-image OUT [--max-segments 16]
 *        an ELF file whose PT_LOADs kexec can load (kexec -l --args-none
 *        --entry=ENTRY OUT): contiguous segments merged, zero runs written out where
 *        they sit between stored ones, so that it fits kexec's segment limit
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
		"[--verify] | --resume-image OUT [--max-segments N])\n");
	return 2;
}

/* The segment's bytes, chunk by chunk: from the image, or zeros. */
static int segment_chunk(int image_fd, const struct khib_segment *s, uint64_t at,
			 unsigned char *buffer, size_t length)
{
	if (s->zero) {
		memset(buffer, 0, length);
		return 0;
	}
	return khib_pread_full(image_fd, buffer, length, s->offset + at);
}

static int write_back(int image_fd, int mem, const struct khib_image *image,
		      unsigned char *buffer)
{
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		for (uint64_t at = 0; at < s->memsz;) {
			size_t length = s->memsz - at < CHUNK ? (size_t)(s->memsz - at) : CHUNK;
			if (segment_chunk(image_fd, s, at, buffer, length) < 0 ||
			    khib_mem_copy(mem, buffer, length, s->paddr + at, 1) < 0) {
				fprintf(stderr, "khib-restore: writing 0x%llx: %s\n",
					(unsigned long long)(s->paddr + at), strerror(errno));
				return -1;
			}
			at += length;
		}
	}
	return 0;
}

/* Compare memory with the image's CRC-32s; the number of segments that differ. */
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
			crc = khib_crc32(crc, buffer, length);
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

/* Runs of physically contiguous segments: each becomes one PT_LOAD. */
static int resume_image(int image_fd, const struct khib_image *image, const char *path,
			size_t max_segments, uint16_t machine, unsigned char *buffer)
{
	size_t groups = 0, first[0x10000];
	int out;
	uint64_t offset;
	Elf64_Ehdr eh = {0};

	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		if (i == 0 || image->segments[i - 1].paddr + image->segments[i - 1].memsz != s->paddr) {
			if (groups == sizeof(first) / sizeof(first[0]))
				return -1;
			first[groups++] = i;
		}
	}
	if (groups > max_segments) {
		fprintf(stderr, "khib-restore: the image holds %zu separate ranges of memory; "
			"kexec loads at most %zu segments\n", groups, max_segments);
		return -1;
	}
	out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out < 0) {
		fprintf(stderr, "khib-restore: %s: %s\n", path, strerror(errno));
		return -1;
	}
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = machine;
	eh.e_version = EV_CURRENT;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = (uint16_t)groups;
	offset = (sizeof(eh) + groups * sizeof(Elf64_Phdr) + KHIB_PAGE - 1) & ~(uint64_t)(KHIB_PAGE - 1);
	if (khib_pwrite_full(out, &eh, sizeof(eh), 0) < 0)
		goto fail;
	for (size_t g = 0; g < groups; g++) {
		size_t end = g + 1 < groups ? first[g + 1] : image->count;
		const struct khib_segment *start = &image->segments[first[g]];
		const struct khib_segment *last = &image->segments[end - 1];
		uint64_t size = last->paddr + last->memsz - start->paddr;
		Elf64_Phdr ph = {.p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X,
				 .p_offset = offset, .p_paddr = start->paddr,
				 .p_vaddr = start->paddr, .p_filesz = size, .p_memsz = size,
				 .p_align = KHIB_PAGE};
		if (khib_pwrite_full(out, &ph, sizeof(ph), sizeof(eh) + g * sizeof(ph)) < 0)
			goto fail;
		for (size_t i = first[g]; i < end; i++) {
			const struct khib_segment *s = &image->segments[i];
			for (uint64_t at = 0; at < s->memsz;) {
				size_t length = s->memsz - at < CHUNK ? (size_t)(s->memsz - at) : CHUNK;
				if (segment_chunk(image_fd, s, at, buffer, length) < 0 ||
				    khib_pwrite_full(out, buffer, length,
						     offset + (s->paddr - start->paddr) + at) < 0)
					goto fail;
				at += length;
			}
		}
		offset += size;
	}
	close(out);
	printf("khib-restore: %s: %zu segments for kexec\n", path, groups);
	return 0;
fail:
	fprintf(stderr, "khib-restore: writing %s: %s\n", path, strerror(errno));
	close(out);
	return -1;
}

/* Nothing is written before the whole image is checked and found to fit around us. */
static int safe_to_write(int image_fd, const char *image_path, const struct khib_image *image,
			 const char *running, unsigned char *buffer)
{
	struct khib_range *own = NULL;
	size_t nown = 0;
	int overlaps;

	if (khib_check_image(image_fd, image_path, image, buffer, CHUNK) != 0)
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
	const char *image_path = NULL, *mem_path = NULL, *resume = NULL, *running = NULL;
	size_t max_segments = 16;
	int verify_only = 0, check_only = 0, status = 1;
	struct khib_image image;
	uint16_t machine;
	unsigned char *buffer = malloc(CHUNK);
	double started = khib_seconds();
	FILE *file;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem_path = argv[++i];
		else if (!strcmp(argv[i], "--running") && i + 1 < argc)
			running = argv[++i];
		else if (!strcmp(argv[i], "--resume-image") && i + 1 < argc)
			resume = argv[++i];
		else if (!strcmp(argv[i], "--max-segments") && i + 1 < argc)
			max_segments = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--verify"))
			verify_only = 1;
		else if (!strcmp(argv[i], "--check"))
			check_only = 1;
		else if (argv[i][0] != '-' && !image_path)
			image_path = argv[i];
		else
			return usage();
	}
	if (!buffer || !image_path || !!mem_path + !!resume + check_only != 1 ||
	    max_segments == 0 || (verify_only && !mem_path))
		return usage();
	file = fopen(image_path, "rb");
	if (!file) {
		fprintf(stderr, "khib-restore: %s: %s\n", image_path, strerror(errno));
		return 1;
	}
	if (khib_read_image(file, image_path, &image, &machine) < 0) {
		fclose(file);
		return 1;
	}
	if (check_only) {
		status = khib_check_image(fileno(file), image_path, &image, buffer, CHUNK) != 0;
		if (!status)
			printf("khib-restore: %s: %zu segments checked, the seal holds\n", image_path,
			       image.count);
	} else if (resume) {
		status = resume_image(fileno(file), &image, resume, max_segments, machine,
				      buffer) < 0;
	} else if (verify_only || safe_to_write(fileno(file), image_path, &image, running, buffer)) {
		int mem = open(mem_path, verify_only ? O_RDONLY : O_RDWR);
		long bad;
		if (mem < 0) {
			fprintf(stderr, "khib-restore: %s: %s\n", mem_path, strerror(errno));
		} else if (verify_only || write_back(fileno(file), mem, &image, buffer) == 0) {
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
