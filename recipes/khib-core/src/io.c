/* Careful I/O: whole reads and writes, memory through mappings, progress. */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
 * [offset, offset + size) of a memory file mapped shared with prot, its pages present
 * (one fault, not one a page); NULL if not (errno EIO past the end of a regular file,
 * where a mapping would fault).  khib_mem_unmap undoes it.
 */
static unsigned char *mapping(int fd, uint64_t offset, size_t size, int prot)
{
	uint64_t page = offset & ~(uint64_t)(KHIB_PAGE - 1);
	size_t lead = (size_t)(offset - page);
	unsigned char *mapped;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return NULL;
	if (S_ISREG(st.st_mode) && offset + size > (uint64_t)st.st_size) {
		errno = EIO;
		return NULL;
	}
	mapped = mmap(NULL, lead + size, prot, MAP_SHARED | MAP_POPULATE, fd, (off_t)page);
	return mapped == MAP_FAILED ? NULL : mapped + lead;
}

/*
 * Copy between memory and a buffer through a shared mapping of the memory file: on
 * /dev/mem, read() and write() stop at the end of the running kernel's own RAM
 * (EFAULT), while mmap() reaches the old kernel's RAM beyond it.  Regular files (the
 * tests' memory) and /proc/vmcore map the same way.
 */
int khib_mem_copy(int fd, void *buffer, size_t size, uint64_t offset, int to_memory)
{
	unsigned char *mapped = mapping(fd, offset, size, to_memory ? PROT_READ | PROT_WRITE
							   : PROT_READ);

	if (!mapped)
		return -1;
	if (to_memory)
		memcpy(mapped, buffer, size);
	else
		memcpy(buffer, mapped, size);
	return khib_mem_unmap(mapped, offset, size);
}

/*
 * Copy between physical memory and a buffer: through --mem, except the bytes between
 * KHIB_LOW_START and KHIB_LOW_END when B's copy of them is open (phys->low), which go
 * to and from that copy (a sysfs file: read and written, not mapped).
 */
int khib_phys_copy(const struct khib_phys *phys, void *buffer, size_t size, uint64_t paddr,
		   int to_memory)
{
	unsigned char *at = buffer;

	while (size) {
		int low = phys->low >= 0 && paddr >= KHIB_LOW_START && paddr < KHIB_LOW_END;
		uint64_t edge = phys->low < 0 ? UINT64_MAX : low ? KHIB_LOW_END :
				paddr < KHIB_LOW_START ? KHIB_LOW_START : UINT64_MAX;
		size_t part = edge - paddr < size ? (size_t)(edge - paddr) : size;
		int failed = !low ? khib_mem_copy(phys->mem, at, part, paddr, to_memory) :
			     to_memory ? khib_pwrite_full(phys->low, at, part, paddr) :
			     khib_pread_full(phys->low, at, part, paddr);
		if (failed < 0)
			return -1;
		at += part;
		paddr += part;
		size -= part;
	}
	return 0;
}

/* [offset, offset + size) of a memory file mapped read only (mapping()). */
const unsigned char *khib_mem_map(int fd, uint64_t offset, size_t size)
{
	return mapping(fd, offset, size, PROT_READ);
}

int khib_mem_unmap(const unsigned char *data, uint64_t offset, size_t size)
{
	size_t lead = (size_t)(offset & (KHIB_PAGE - 1));

	return munmap((void *)(data - lead), lead + size);
}

/*
 * Memory [paddr, paddr + size), read only, handed to each() a piece at a time, in place:
 * through a shared mapping of --mem (no copy), or read into buffer (KHIB_WINDOW bytes)
 * where the low copy stands for it.
 */
int khib_phys_read(const struct khib_phys *phys, uint64_t paddr, uint64_t size,
		   unsigned char *buffer, khib_mem_fn each, void *context)
{
	while (size) {
		int low = phys->low >= 0 && paddr >= KHIB_LOW_START && paddr < KHIB_LOW_END;
		uint64_t edge = low ? KHIB_LOW_END : phys->low >= 0 && paddr < KHIB_LOW_START ?
				KHIB_LOW_START : (paddr | (KHIB_WINDOW - 1)) + 1;
		size_t part = edge - paddr < size ? (size_t)(edge - paddr) : (size_t)size;
		int failed;
		if (part > KHIB_WINDOW)
			part = KHIB_WINDOW;
		if (low) {
			failed = khib_pread_full(phys->low, buffer, part, paddr) < 0 ||
				 each(context, buffer, part, paddr) < 0;
		} else {
			const unsigned char *mapped = khib_mem_map(phys->mem, paddr, part);
			if (!mapped)
				return -1;
			failed = each(context, mapped, part, paddr) < 0;
			if (khib_mem_unmap(mapped, paddr, part) < 0)
				return -1;
		}
		if (failed)
			return -1;
		paddr += part;
		size -= part;
	}
	return 0;
}

/* The ELF header of a little-endian ELF64 core: a khib image's, or an export's. */
Elf64_Ehdr khib_core_header(uint16_t machine, uint64_t phoff, uint16_t phnum)
{
	Elf64_Ehdr eh = {.e_type = ET_CORE, .e_machine = machine, .e_version = EV_CURRENT,
			 .e_phoff = phoff, .e_ehsize = sizeof(eh),
			 .e_phentsize = sizeof(Elf64_Phdr), .e_phnum = phnum};

	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	return eh;
}

double khib_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

void khib_progress(const char *what, uint64_t done, uint64_t total)
{
	fprintf(stderr, "khib: %s %llu/%llu MiB\n", what, (unsigned long long)(done >> 20),
		(unsigned long long)(total >> 20));
}

/* One unsigned number at text (0x for hex, a leading 0 for octal), where it ends in *end:
 * a digit first (strtoull would take "", a sign or spaces); 1 if one is there. */
static int parse_number(const char *text, uint64_t *value, char **end)
{
	if (*text < '0' || *text > '9')
		return 0;
	errno = 0;
	*value = strtoull(text, end, 0);
	return !errno;
}

/* A number, or with second a pair "FIRST:SECOND": 1 if well-formed (nothing after it). */
int khib_parse_pair(const char *text, uint64_t *first, uint64_t *second)
{
	char *end;

	if (!parse_number(text, first, &end))
		return 0;
	if (second && (*end != ':' || !parse_number(end + 1, second, &end)))
		return 0;
	return !*end;
}
