/* Shared by khib-save and khib-restore: the image format, ranges, careful I/O. */
#define _GNU_SOURCE
#include "khib-image.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* CRC-32 (IEEE, as zlib's), eight bytes a step ("slicing by 8"): four times the speed of a
 * byte a step, which matters where every stored byte is checked three times. */
uint32_t khib_crc32(uint32_t crc, const void *data, size_t size)
{
	static uint32_t table[8][256];
	const unsigned char *bytes = data;

	if (!table[0][1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[0][i] = c;
		}
		for (uint32_t i = 0; i < 256; i++)
			for (int t = 1; t < 8; t++)
				table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
	}
	crc = ~crc;
	for (; size >= 8; size -= 8, bytes += 8) {
		uint32_t low = crc ^ ((uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 |
				      (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24);
		uint32_t high = (uint32_t)bytes[4] | (uint32_t)bytes[5] << 8 |
				(uint32_t)bytes[6] << 16 | (uint32_t)bytes[7] << 24;
		crc = table[7][low & 0xff] ^ table[6][(low >> 8) & 0xff] ^
		      table[5][(low >> 16) & 0xff] ^ table[4][low >> 24] ^
		      table[3][high & 0xff] ^ table[2][(high >> 8) & 0xff] ^
		      table[1][(high >> 16) & 0xff] ^ table[0][high >> 24];
	}
	while (size--)
		crc = table[0][(crc ^ *bytes++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* Whether a run of bytes is all zero: a word at a time. */
int khib_is_zero(const unsigned char *page, size_t size)
{
	size_t i = 0;

	for (; i + sizeof(uint64_t) <= size; i += sizeof(uint64_t)) {
		uint64_t word;
		memcpy(&word, page + i, sizeof(word));
		if (word)
			return 0;
	}
	for (; i < size; i++)
		if (page[i])
			return 0;
	return 1;
}

/*
 * Add pages to the image; with merge, pages that continue the last segment in kind
 * extend it (crc is then the CRC-32 of the whole segment so far).
 */
int khib_append(struct khib_image *image, uint64_t paddr, uint64_t size, enum khib_kind kind,
		uint32_t crc, int merge)
{
	struct khib_segment *last = image->count ? &image->segments[image->count - 1] : NULL;

	if (merge && last && last->kind == kind && last->paddr + last->memsz == paddr) {
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
		.paddr = paddr, .memsz = size, .kind = kind, .crc32 = crc,
	};
	return 0;
}

void khib_free(struct khib_image *image)
{
	free(image->segments);
	free(image->records);
	free(image->meta);
	free(image->pairs);
	free(image->vmcoreinfo);
	free(image->phdrs);
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

/* Whether the image is complete, and if not, why: its first four bytes. */
static int complete(FILE *file, const char *name, Elf64_Ehdr *header)
{
	static const unsigned char nothing[SELFMAG];

	if (fseeko(file, 0, SEEK_SET) || fread(header, sizeof(*header), 1, file) != 1) {
		fprintf(stderr, "khib: %s: no complete image (too short to hold one)\n", name);
		return 0;
	}
	if (!memcmp(header->e_ident, KHIB_USED_MAGIC, SELFMAG)) {
		fprintf(stderr, "khib: %s: no hibernation image: the one here was used "
			"(the system resumed from it)\n", name);
		return 0;
	}
	if (!memcmp(header->e_ident, nothing, SELFMAG)) {
		fprintf(stderr, "khib: %s: no complete image (a save did not finish, or none "
			"was made)\n", name);
		return 0;
	}
	if (memcmp(header->e_ident, ELFMAG, SELFMAG) || header->e_ident[EI_CLASS] != ELFCLASS64 ||
	    header->e_type != ET_CORE || header->e_phentsize != sizeof(Elf64_Phdr)) {
		fprintf(stderr, "khib: %s: not a khib image (an ELF64 core)\n", name);
		return 0;
	}
	return 1;
}

/* Keep one note's descriptor where it belongs in the image (or drop it). */
static void keep_note(struct khib_image *image, int vmcoreinfo, uint32_t type, char *desc,
		      uint32_t size, size_t *nrecords, int *sealed)
{
	if (vmcoreinfo && !image->vmcoreinfo) {
		image->vmcoreinfo = desc;
		image->vmcoreinfo_size = size;
	} else if (!vmcoreinfo && type == KHIB_NOTE_SEGMENTS && !image->records) {
		image->records = (struct khib_record *)desc;
		*nrecords = size / sizeof(struct khib_record);
	} else if (!vmcoreinfo && type == KHIB_NOTE_META && !image->meta) {
		image->meta = desc;
		image->meta_size = size;
	} else if (!vmcoreinfo && type == KHIB_NOTE_LAYOUT && size >= sizeof(image->layout) &&
		   !image->pairs) {
		memcpy(&image->layout, desc, sizeof(image->layout));
		if (image->layout.npairs == (size - sizeof(image->layout)) / sizeof(struct khib_pair)) {
			image->pairs = (struct khib_pair *)desc;
			memmove(desc, desc + sizeof(image->layout), size - sizeof(image->layout));
			return;
		}
		image->layout.npairs = 0;
		free(desc);
	} else if (!vmcoreinfo && type == KHIB_NOTE_SEAL && size == sizeof(image->seal)) {
		memcpy(&image->seal, desc, sizeof(image->seal));
		*sealed = 1;
		free(desc);
	} else {
		free(desc);
	}
}

/* The notes of one PT_NOTE: KHIB's own, and the old kernel's VMCOREINFO. */
static int read_notes(FILE *file, const char *name, const Elf64_Phdr *p,
		      struct khib_image *image, size_t *nrecords, int *sealed)
{
	for (uint64_t at = 0; at + sizeof(Elf64_Nhdr) <= p->p_filesz;) {
		Elf64_Nhdr note;
		char owner[12];
		size_t owner_size;
		uint32_t descsz;
		char *desc;
		int vmcoreinfo;

		if (fseeko(file, (off_t)(p->p_offset + at), SEEK_SET) ||
		    fread(&note, sizeof(note), 1, file) != 1 || note.n_namesz > sizeof(owner))
			return 0;
		owner_size = (note.n_namesz + 3u) & ~3u;
		if (fread(owner, owner_size, 1, file) != 1)
			return 0;
		vmcoreinfo = note.n_namesz == 11 && !memcmp(owner, KHIB_VMCOREINFO_NAME, 11);
		if (!vmcoreinfo && (note.n_namesz != 5 || memcmp(owner, KHIB_NOTE_NAME, 5)))
			return 0;
		descsz = note.n_descsz;
		if (descsz > p->p_filesz - at || (note.n_type == KHIB_NOTE_META &&
						   descsz > KHIB_META_MAX)) {
			fprintf(stderr, "khib: %s: a note is larger than its segment\n", name);
			return -1;
		}
		desc = malloc(descsz + 1u);
		if (!desc || fread(desc, 1, descsz, file) != descsz) {
			free(desc);
			fprintf(stderr, "khib: %s: cannot read its notes\n", name);
			return -1;
		}
		desc[descsz] = '\0';
		keep_note(image, vmcoreinfo, note.n_type, desc, descsz, nrecords, sealed);
		at += sizeof(note) + owner_size + ((descsz + 3u) & ~3u);
	}
	return 0;
}

/* Read an image's segments back: program headers, checked against the KHIB notes. */
int khib_read_image(FILE *file, const char *name, struct khib_image *image,
		    uint16_t *machine)
{
	Elf64_Ehdr header;
	Elf64_Phdr *phdrs = NULL;
	size_t loads = 0, nrecords = 0;
	int sealed = 0, status = -1;

	*image = (struct khib_image){0};
	if (!complete(file, name, &header))
		return -1;
	*machine = header.e_machine;
	phdrs = calloc(header.e_phnum ? header.e_phnum : 1, sizeof(*phdrs));
	if (!phdrs || fseeko(file, (off_t)header.e_phoff, SEEK_SET) ||
	    fread(phdrs, sizeof(*phdrs), header.e_phnum, file) != header.e_phnum) {
		fprintf(stderr, "khib: %s: no complete image (its headers are cut short)\n", name);
		goto out;
	}
	for (unsigned i = 0; i < header.e_phnum; i++)
		if (phdrs[i].p_type == PT_NOTE &&
		    read_notes(file, name, &phdrs[i], image, &nrecords, &sealed) < 0)
			goto out;
	if (!sealed) {
		fprintf(stderr, "khib: %s: the image has no seal (made by an older khib-save?)\n",
			name);
		goto out;
	}
	for (unsigned i = 0; i < header.e_phnum; i++) {
		Elf64_Phdr *p = &phdrs[i];
		const struct khib_record *record = &image->records[loads];
		if (p->p_type != KHIB_PT_MEMORY)
			continue;
		if (loads >= nrecords || record->paddr != p->p_paddr ||
		    record->memsz != p->p_memsz || record->kind > KHIB_FREE ||
		    (record->kind == KHIB_DATA) != (p->p_filesz != 0) ||
		    p->p_offset + p->p_filesz > image->seal.image_size ||
		    p->p_offset + p->p_filesz < p->p_offset) {
			fprintf(stderr, "khib: %s: segment %zu does not match its record\n", name,
				loads);
			goto out;
		}
		if (khib_append(image, p->p_paddr, p->p_memsz, (enum khib_kind)record->kind,
				record->crc32, 0) < 0)
			goto out;
		image->segments[image->count - 1].offset = p->p_offset;
		image->segments[image->count - 1].filesz = p->p_filesz;
		loads++;
	}
	if (loads != nrecords) {
		fprintf(stderr, "khib: %s: %zu segments, %zu records\n", name, loads, nrecords);
		goto out;
	}
	image->phdrs = phdrs;
	image->phdrs_size = header.e_phnum * sizeof(*phdrs);
	phdrs = NULL;
	status = 0;
out:
	if (status)
		khib_free(image);
	free(phdrs);
	return status;
}

/*
 * Each block of data segment ``index``: read, fed to sha (header and stored bytes, as
 * they are in the image), decompressed (LZ4's safe decoder: a damaged block cannot write
 * past its buffer) and handed to each() with its offset in the segment's memory.
 */
int khib_segment_blocks(int fd, const char *name, const struct khib_image *image, size_t index,
			struct khib_sha256 *sha, khib_block_fn each, void *context)
{
	const struct khib_segment *s = &image->segments[index];
	size_t bound = (size_t)LZ4_compressBound((int)KHIB_BLOCK);
	unsigned char *stored = malloc(bound), *block = malloc(KHIB_BLOCK);
	uint64_t at = 0, offset = s->offset, end = s->offset + s->filesz;
	int status = -1;

	if (!stored || !block)
		goto out;
	while (at < s->memsz) {
		size_t expected = s->memsz - at < KHIB_BLOCK ? (size_t)(s->memsz - at) : KHIB_BLOCK;
		unsigned char header[4];
		uint32_t word, length;
		const unsigned char *memory = stored;
		if (offset + 4 > end || khib_pread_full(fd, header, 4, offset) < 0)
			goto damaged;
		word = (uint32_t)header[0] | (uint32_t)header[1] << 8 | (uint32_t)header[2] << 16 |
		       (uint32_t)header[3] << 24;
		length = word & ~KHIB_BLOCK_RAW;
		if (length > bound || offset + 4 + length > end ||
		    ((word & KHIB_BLOCK_RAW) && length != expected) ||
		    khib_pread_full(fd, stored, length, offset + 4) < 0)
			goto damaged;
		if (sha) {
			khib_sha256_update(sha, header, 4);
			khib_sha256_update(sha, stored, length);
		}
		if (!(word & KHIB_BLOCK_RAW)) {
			if (LZ4_decompress_safe((const char *)stored, (char *)block, (int)length,
						(int)KHIB_BLOCK) != (int)expected)
				goto damaged;
			memory = block;
		}
		if (each(context, memory, expected, at) < 0)
			goto out;
		at += expected;
		offset += 4 + length;
	}
	if (offset != end)
		goto damaged;
	status = 0;
	goto out;
damaged:
	fprintf(stderr, "khib: %s: segment %zu (0x%llx-0x%llx) is damaged or cut short\n",
		name, index, (unsigned long long)s->paddr,
		(unsigned long long)(s->paddr + s->memsz - 1));
out:
	free(stored);
	free(block);
	return status;
}

/*
 * The seal's digests: SHA-256 (and with a key, HMAC-SHA256) of the stored bytes' own
 * SHA-256 followed by the notes the seal covers.
 */
void khib_seal_digests(const unsigned char data_digest[32], const struct khib_sealed_notes *n,
		       const struct khib_key *key, struct khib_seal *seal)
{
	struct khib_sha256 plain, keyed;
	const struct { const void *at; size_t size; } parts[] = {
		{data_digest, 32}, {n->phdrs, n->phdrs_size}, {n->records, n->records_size},
		{n->meta, n->meta_size},
		{n->layout, sizeof(*n->layout)},
		{n->pairs, (size_t)n->layout->npairs * sizeof(*n->pairs)},
		{n->vmcoreinfo, n->vmcoreinfo_size},
	};

	khib_sha256_init(&plain);
	if (key->set)
		khib_hmac_init(&keyed, key);
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		khib_sha256_update(&plain, parts[i].at, parts[i].size);
		if (key->set)
			khib_sha256_update(&keyed, parts[i].at, parts[i].size);
	}
	khib_sha256_final(&plain, seal->sha256);
	seal->keyed = key->set ? 1 : 0;
	memset(seal->hmac, 0, sizeof(seal->hmac));
	if (key->set)
		khib_hmac_final(&keyed, key, seal->hmac);
}

/* Constant-time comparison of two digests. */
static int same_digest(const unsigned char *a, const unsigned char *b)
{
	unsigned char differ = 0;

	for (size_t i = 0; i < 32; i++)
		differ |= (unsigned char)(a[i] ^ b[i]);
	return differ == 0;
}

static int add_crc(void *context, const unsigned char *data, size_t size, uint64_t at)
{
	(void)at;
	*(uint32_t *)context = khib_crc32(*(uint32_t *)context, data, size);
	return 0;
}

/*
 * Read the whole image and check it against its own checksums before anything is written
 * from it: every data segment's blocks and CRC-32, the SHA-256 of the seal and, with a
 * key, its HMAC (a keyed image needs the key, a key needs a keyed image).  Returns the
 * number of problems found (each named on standard error), or -1.
 */
int khib_check_image(int fd, const char *name, const struct khib_image *image,
		     const struct khib_key *key)
{
	struct khib_sha256 sha;
	struct khib_seal expected;
	unsigned char digest[32];
	struct khib_sealed_notes notes = {
		image->phdrs, image->phdrs_size,
		image->records, image->count * sizeof(*image->records), image->meta,
		image->meta_size, &image->layout, image->pairs, image->vmcoreinfo,
		image->vmcoreinfo_size,
	};
	int bad = 0;

	if (image->seal.keyed != (uint64_t)key->set) {
		fprintf(stderr, "khib: %s: %s\n", name, key->set ?
			"the image is not keyed: refused under --key" :
			"the image is keyed: it needs --key");
		return 1;
	}
	khib_sha256_init(&sha);
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		uint32_t crc = 0;
		if (s->kind != KHIB_DATA)
			continue;
		if (khib_segment_blocks(fd, name, image, i, &sha, add_crc, &crc) < 0)
			return -1;
		if (crc != s->crc32) {
			fprintf(stderr, "khib: %s: segment %zu (0x%llx-0x%llx) does not match its "
				"checksum\n", name, i, (unsigned long long)s->paddr,
				(unsigned long long)(s->paddr + s->memsz - 1));
			bad++;
		}
	}
	khib_sha256_final(&sha, digest);
	khib_seal_digests(digest, &notes, key, &expected);
	if (!same_digest(expected.sha256, image->seal.sha256)) {
		fprintf(stderr, "khib: %s: the image does not match its SHA-256 seal\n", name);
		bad++;
	}
	if (key->set && !same_digest(expected.hmac, image->seal.hmac)) {
		fprintf(stderr, "khib: %s: the image fails its HMAC: not made with this key, or "
			"changed since\n", name);
		bad++;
	}
	return bad;
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
