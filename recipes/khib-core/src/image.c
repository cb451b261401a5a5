/* Shared by khib-save and khib-restore: the image format, ranges, careful I/O. */
#define _GNU_SOURCE
#include "khib-image.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint32_t khib_crc32(uint32_t crc, const void *data, size_t size)
{
	static uint32_t table[256];
	const unsigned char *bytes = data;

	if (!table[1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
	}
	crc = ~crc;
	while (size--)
		crc = table[(crc ^ *bytes++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

int khib_is_zero(const unsigned char *page, size_t size)
{
	for (size_t i = 0; i < size; i++)
		if (page[i])
			return 0;
	return 1;
}

/*
 * Add pages to the image; with merge, pages that continue the last segment in kind
 * extend it (crc is then the CRC-32 of the whole segment so far).
 */
int khib_append(struct khib_image *image, uint64_t paddr, uint64_t size, int zero,
		uint32_t crc, int merge)
{
	struct khib_segment *last = image->count ? &image->segments[image->count - 1] : NULL;

	if (merge && last && last->zero == zero && last->paddr + last->memsz == paddr) {
		last->memsz += size;
		last->crc32 = crc;
		return 0;
	}
	if (image->count == image->capacity) {
		size_t capacity = image->capacity ? 2 * image->capacity : 64;
		void *grown = realloc(image->segments, capacity * sizeof(*image->segments));
		if (!grown)
			return -1;
		image->segments = grown;
		image->capacity = capacity;
	}
	image->segments[image->count++] = (struct khib_segment){
		.paddr = paddr, .memsz = size, .zero = zero, .crc32 = crc,
	};
	return 0;
}

void khib_free(struct khib_image *image)
{
	free(image->segments);
	*image = (struct khib_image){0};
}

int khib_pread_full(int fd, void *buffer, size_t size, uint64_t offset)
{
	unsigned char *at = buffer;

	while (size) {
		ssize_t got = pread(fd, at, size, (off_t)offset);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (got == 0)
				errno = EIO;
			return -1;
		}
		at += got;
		size -= (size_t)got;
		offset += (uint64_t)got;
	}
	return 0;
}

int khib_pwrite_full(int fd, const void *buffer, size_t size, uint64_t offset)
{
	const unsigned char *at = buffer;

	while (size) {
		ssize_t put = pwrite(fd, at, size, (off_t)offset);
		if (put < 0 && errno == EINTR)
			continue;
		if (put <= 0) {
			if (put == 0)
				errno = EIO;
			return -1;
		}
		at += put;
		size -= (size_t)put;
		offset += (uint64_t)put;
	}
	return 0;
}

/*
 * Copy between memory and a buffer through a shared mapping of the memory file: on
 * /dev/mem, read() and write() stop at the end of the running kernel's own RAM
 * (EFAULT), while mmap() reaches the old kernel's RAM beyond it.  Regular files (the
 * tests' memory) and /proc/vmcore map the same way.
 */
int khib_mem_copy(int fd, void *buffer, size_t size, uint64_t offset, int to_memory)
{
	uint64_t page = offset & ~(uint64_t)(KHIB_PAGE - 1);
	size_t lead = (size_t)(offset - page);
	unsigned char *mapped;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -1;
	if (S_ISREG(st.st_mode) && offset + size > (uint64_t)st.st_size) {
		errno = EIO; /* past the end of a file: a mapping would fault */
		return -1;
	}
	mapped = mmap(NULL, lead + size, to_memory ? PROT_READ | PROT_WRITE : PROT_READ,
		      MAP_SHARED, fd, (off_t)page);
	if (mapped == MAP_FAILED)
		return -1;
	if (to_memory)
		memcpy(mapped + lead, buffer, size);
	else
		memcpy(buffer, mapped + lead, size);
	return munmap(mapped, lead + size);
}

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
 * RAM ranges as A recorded them: one "start-end" (hex, end inclusive) per line, as in
 * /proc/iomem; a line with a " : label" counts only if the label is "System RAM".
 * On /dev/mem a physical address is its own file offset.
 */
int khib_read_ranges(const char *path, struct khib_range **ranges, size_t *count)
{
	FILE *file = fopen(path, "r");
	char line[256];
	int number = 0;

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
			fclose(file);
			return -1;
		}
		if (label && !strstr(label, "System RAM"))
			continue;
		if (add_range(ranges, count, start, end - start + 1, start) < 0) {
			fclose(file);
			return -1;
		}
	}
	fclose(file);
	return 0;
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

/* Read an image's segments back: program headers, checked against the KHIB note. */
int khib_read_image(FILE *file, const char *name, struct khib_image *image,
		    uint16_t *machine)
{
	Elf64_Ehdr header;
	Elf64_Phdr *phdrs = NULL;
	struct khib_record *records = NULL;
	size_t loads = 0, nrecords = 0;
	int status = -1;

	*image = (struct khib_image){0};
	if (fseeko(file, 0, SEEK_SET) || fread(&header, sizeof(header), 1, file) != 1 ||
	    memcmp(header.e_ident, ELFMAG, SELFMAG) || header.e_ident[EI_CLASS] != ELFCLASS64 ||
	    header.e_type != ET_CORE || header.e_phentsize != sizeof(Elf64_Phdr)) {
		fprintf(stderr, "khib: %s: not a khib image (an ELF64 core)\n", name);
		return -1;
	}
	*machine = header.e_machine;
	phdrs = calloc(header.e_phnum ? header.e_phnum : 1, sizeof(*phdrs));
	if (!phdrs || fseeko(file, (off_t)header.e_phoff, SEEK_SET) ||
	    fread(phdrs, sizeof(*phdrs), header.e_phnum, file) != header.e_phnum)
		goto out;
	for (unsigned i = 0; i < header.e_phnum; i++) {
		Elf64_Phdr *p = &phdrs[i];
		if (p->p_type == PT_NOTE) {
			Elf64_Nhdr note;
			char owner[8];
			if (fseeko(file, (off_t)p->p_offset, SEEK_SET) ||
			    fread(&note, sizeof(note), 1, file) != 1 || note.n_namesz != 5 ||
			    fread(owner, 8, 1, file) != 1 || memcmp(owner, KHIB_NOTE_NAME, 5) ||
			    note.n_type != KHIB_NOTE_SEGMENTS)
				continue;
			nrecords = note.n_descsz / sizeof(*records);
			records = calloc(nrecords ? nrecords : 1, sizeof(*records));
			if (!records || fread(records, sizeof(*records), nrecords, file) != nrecords)
				goto out;
		}
	}
	for (unsigned i = 0; i < header.e_phnum; i++) {
		Elf64_Phdr *p = &phdrs[i];
		if (p->p_type != PT_LOAD)
			continue;
		if (loads >= nrecords || records[loads].paddr != p->p_paddr ||
		    records[loads].memsz != p->p_memsz ||
		    (p->p_filesz && p->p_filesz != p->p_memsz)) {
			fprintf(stderr, "khib: %s: segment %zu does not match its record\n", name,
				loads);
			goto out;
		}
		if (khib_append(image, p->p_paddr, p->p_memsz, p->p_filesz == 0,
				records[loads].crc32, 0) < 0)
			goto out;
		image->segments[image->count - 1].offset = p->p_offset;
		loads++;
	}
	if (loads != nrecords) {
		fprintf(stderr, "khib: %s: %zu segments, %zu records\n", name, loads, nrecords);
		goto out;
	}
	status = 0;
out:
	if (status)
		khib_free(image);
	free(phdrs);
	free(records);
	return status;
}

void khib_progress(const char *what, uint64_t done, uint64_t total)
{
	fprintf(stderr, "khib: %s %llu/%llu MiB\n", what, (unsigned long long)(done >> 20),
		(unsigned long long)(total >> 20));
}
