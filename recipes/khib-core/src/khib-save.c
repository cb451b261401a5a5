/*
 * khib-save: stream the old kernel's memory into a khib image (see khib-image.h).
 *
 *   khib-save --vmcore /proc/vmcore -o IMAGE [--exclude RANGES]
 *   khib-save --mem /dev/mem --ranges RANGES -o IMAGE [--exclude RANGES]
 *
 * --exclude leaves out the System RAM its file lists (in B: B's own /proc/iomem, the
 * memory B runs in, which holds B and not the old kernel).
 *
 * Two passes over the memory: the first finds the runs of zero pages and the CRC-32 of
 * every segment, which fixes the image's headers; the second writes the stored pages
 * and checks that they still have the same CRC-32 (the old kernel is frozen, so a
 * difference means the source is not what it seems).  IMAGE may be a file or a block
 * device.
 */
#define _GNU_SOURCE
#include "khib-image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define PROGRESS_EVERY (64ull << 20)

#if defined(__x86_64__)
#define MACHINE EM_X86_64
#else
#define MACHINE EM_386
#endif

static int usage(void)
{
	fprintf(stderr, "usage: khib-save (--vmcore FILE | --mem FILE --ranges FILE) -o IMAGE "
		"[--exclude RANGES]\n");
	return 2;
}

/* Pass 1: segments (zero runs and stored runs) with their CRC-32. */
static int scan(int fd, const struct khib_range *ranges, size_t count, uint64_t total,
		unsigned char *buffer, struct khib_image *image, uint64_t *zero_pages)
{
	uint64_t done = 0, shown = 0;

	for (size_t r = 0; r < count; r++) {
		for (uint64_t at = 0; at < ranges[r].size;) {
			size_t length = ranges[r].size - at < CHUNK ? (size_t)(ranges[r].size - at) : CHUNK;
			if (khib_mem_copy(fd, buffer, length, ranges[r].offset + at, 0) < 0)
				return -1;
			for (size_t page = 0; page < length; page += KHIB_PAGE) {
				size_t size = length - page < KHIB_PAGE ? length - page : KHIB_PAGE;
				uint64_t paddr = ranges[r].paddr + at + page;
				int zero = khib_is_zero(buffer + page, size);
				struct khib_segment *last = image->count ?
					&image->segments[image->count - 1] : NULL;
				int continues = last && last->zero == zero &&
					last->paddr + last->memsz == paddr;
				uint32_t crc = khib_crc32(continues ? last->crc32 : 0, buffer + page,
							  size);
				if (khib_append(image, paddr, size, zero, crc, 1) < 0)
					return -1;
				*zero_pages += (uint64_t)zero;
			}
			at += length;
			done += length;
			if (done - shown >= PROGRESS_EVERY || done == total) {
				khib_progress("scanned", done, total);
				shown = done;
			}
		}
	}
	return 0;
}

/* Where a physical address is in the source, and how many bytes follow it there. */
static uint64_t source_span(const struct khib_range *ranges, size_t count, uint64_t paddr,
			    uint64_t *available)
{
	for (size_t r = 0; r < count; r++) {
		if (paddr >= ranges[r].paddr && paddr - ranges[r].paddr < ranges[r].size) {
			*available = ranges[r].size - (paddr - ranges[r].paddr);
			return ranges[r].offset + (paddr - ranges[r].paddr);
		}
	}
	*available = 0;
	return UINT64_MAX;
}

static int write_headers(int out, struct khib_image *image, uint64_t *data_start)
{
	size_t phnum = image->count + 1;
	size_t note_size = sizeof(Elf64_Nhdr) + 8 + image->count * sizeof(struct khib_record);
	uint64_t note_offset = sizeof(Elf64_Ehdr) + phnum * sizeof(Elf64_Phdr);
	uint64_t offset = (note_offset + note_size + KHIB_PAGE - 1) & ~(uint64_t)(KHIB_PAGE - 1);
	size_t size = (size_t)offset;
	unsigned char *headers = calloc(1, size);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)headers;
	Elf64_Phdr *ph = (Elf64_Phdr *)(headers + sizeof(*eh));
	Elf64_Nhdr *note = (Elf64_Nhdr *)(headers + note_offset);
	struct khib_record *records = (struct khib_record *)((unsigned char *)(note + 1) + 8);
	int status;

	if (!headers)
		return -1;
	if (phnum > 0xfffe) {
		fprintf(stderr, "khib-save: %zu segments: more than an ELF header can count\n",
			image->count);
		free(headers);
		return -1;
	}
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_CORE;
	eh->e_machine = MACHINE;
	eh->e_version = EV_CURRENT;
	eh->e_phoff = sizeof(*eh);
	eh->e_ehsize = sizeof(*eh);
	eh->e_phentsize = sizeof(*ph);
	eh->e_phnum = (uint16_t)phnum;
	ph[0] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = note_offset, .p_filesz = note_size};
	note->n_namesz = 5;
	note->n_descsz = (uint32_t)(image->count * sizeof(*records));
	note->n_type = KHIB_NOTE_SEGMENTS;
	memcpy(note + 1, KHIB_NOTE_NAME, 5);
	for (size_t i = 0; i < image->count; i++) {
		struct khib_segment *s = &image->segments[i];
		s->offset = s->zero ? 0 : offset;
		ph[i + 1] = (Elf64_Phdr){
			.p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X, .p_offset = s->offset,
			.p_paddr = s->paddr, .p_filesz = s->zero ? 0 : s->memsz,
			.p_memsz = s->memsz, .p_align = KHIB_PAGE,
		};
		records[i] = (struct khib_record){s->paddr, s->memsz, s->crc32,
			s->zero ? (uint32_t)((s->memsz + KHIB_PAGE - 1) / KHIB_PAGE) : 0};
		if (!s->zero)
			offset += s->memsz;
	}
	status = khib_pwrite_full(out, headers, size, 0);
	free(headers);
	*data_start = offset;
	return status;
}

/* Pass 2: the stored segments' bytes, checked against pass 1. */
static int copy(int fd, int out, const struct khib_range *ranges, size_t count,
		struct khib_image *image, unsigned char *buffer, uint64_t stored)
{
	uint64_t done = 0, shown = 0;

	for (size_t i = 0; i < image->count; i++) {
		struct khib_segment *s = &image->segments[i];
		uint32_t crc = 0;
		if (s->zero)
			continue;
		for (uint64_t at = 0; at < s->memsz;) {
			uint64_t available;
			uint64_t from = source_span(ranges, count, s->paddr + at, &available);
			size_t length = CHUNK;
			if (available < length)
				length = (size_t)available;
			if (s->memsz - at < length)
				length = (size_t)(s->memsz - at);
			if (from == UINT64_MAX || khib_mem_copy(fd, buffer, length, from, 0) < 0 ||
			    khib_pwrite_full(out, buffer, length, s->offset + at) < 0)
				return -1;
			crc = khib_crc32(crc, buffer, length);
			at += length;
			done += length;
			if (done - shown >= PROGRESS_EVERY || done == stored) {
				khib_progress("saved", done, stored);
				shown = done;
			}
		}
		if (crc != s->crc32) {
			fprintf(stderr, "khib-save: memory at 0x%llx changed between the two passes\n",
				(unsigned long long)s->paddr);
			return -1;
		}
	}
	return 0;
}

int khib_save_main(int argc, char **argv)
{
	const char *vmcore = NULL, *mem = NULL, *ranges_path = NULL, *output = NULL;
	const char *exclude = NULL;
	struct khib_range *ranges = NULL, *holes = NULL;
	struct khib_image image = {0};
	size_t count = 0, nholes = 0;
	uint64_t total = 0, stored = 0, zero_pages = 0, data_start = 0;
	unsigned char *buffer = malloc(CHUNK);
	int fd, out, status = 1;

	for (int i = 1; i < argc; i++) {
		const char **slot = !strcmp(argv[i], "--vmcore") ? &vmcore :
				    !strcmp(argv[i], "--mem") ? &mem :
				    !strcmp(argv[i], "--ranges") ? &ranges_path :
				    !strcmp(argv[i], "--exclude") ? &exclude :
				    !strcmp(argv[i], "-o") ? &output : NULL;
		if (!slot || ++i == argc)
			return usage();
		*slot = argv[i];
	}
	if (!buffer || !output || !!vmcore == !!mem || (mem && !ranges_path))
		return usage();
	fd = open(vmcore ? vmcore : mem, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", vmcore ? vmcore : mem, strerror(errno));
		return 1;
	}
	if ((vmcore ? khib_vmcore_ranges(fd, vmcore, &ranges, &count)
		    : khib_read_ranges(ranges_path, &ranges, &count)) < 0 ||
	    (exclude && (khib_read_ranges(exclude, &holes, &nholes) < 0 ||
			 khib_exclude(&ranges, &count, holes, nholes) < 0)))
		return 1;
	free(holes);
	for (size_t r = 0; r < count; r++)
		total += ranges[r].size;
	out = open(output, O_WRONLY | O_CREAT, 0644);
	if (out < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", output, strerror(errno));
		return 1;
	}
	if (scan(fd, ranges, count, total, buffer, &image, &zero_pages) < 0) {
		fprintf(stderr, "khib-save: reading %s: %s\n", vmcore ? vmcore : mem,
			strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < image.count; i++)
		stored += image.segments[i].zero ? 0 : image.segments[i].memsz;
	if (write_headers(out, &image, &data_start) < 0 ||
	    copy(fd, out, ranges, count, &image, buffer, stored) < 0) {
		fprintf(stderr, "khib-save: writing %s: %s\n", output, strerror(errno));
		goto out;
	}
	if (ftruncate(out, (off_t)data_start) < 0 && errno != EINVAL) /* a block device */
		goto out;
	if (fsync(out) < 0)
		goto out;
	printf("khib-save: %s: %zu segments, %llu MiB of %llu stored, %llu zero pages recorded\n",
	       output, image.count, (unsigned long long)(stored >> 20),
	       (unsigned long long)(total >> 20), (unsigned long long)zero_pages);
	status = 0;
out:
	khib_free(&image);
	free(ranges);
	free(buffer);
	close(fd);
	close(out);
	return status;
}
