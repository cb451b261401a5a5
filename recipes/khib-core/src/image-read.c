/* Reading an image's headers and notes, every size and place checked before use. */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	free(image->digests);
	*image = (struct khib_image){0};
}

/* Whether the image is complete, and if not, why: its first four bytes. */
static int complete(int fd, const char *name, Elf64_Ehdr *header)
{
	static const unsigned char nothing[SELFMAG];
	char why[KHIB_WHY_MAX];

	if (khib_pread_full(fd, header, sizeof(*header), 0) < 0) {
		fprintf(stderr, "khib: %s: no complete image (too short to hold one)\n", name);
		return 0;
	}
	if (!memcmp(header->e_ident, KHIB_USED_MAGIC, SELFMAG)) {
		fprintf(stderr, "khib: %s: no hibernation image: the one here was used "
			"(the system resumed from it)\n", name);
		return 0;
	}
	if (!memcmp(header->e_ident, KHIB_ASIDE_MAGIC, SELFMAG)) {
		if (khib_pread_full(fd, why, sizeof(why), KHIB_WHY_AT) < 0)
			why[0] = '\0';
		why[sizeof(why) - 1] = '\0';
		for (char *c = why; *c; c++)   /* written by whoever had the disk: text only */
			if (*c < ' ' || *c > '~')
				*c = '?';
		fprintf(stderr, "khib: %s: no hibernation image: the one here was set aside by a "
			"resume boot (%s)\n", name, why[0] ? why : "no reason recorded");
		return 0;
	}
	if (!memcmp(header->e_ident, nothing, SELFMAG)) {
		fprintf(stderr, "khib: %s: no complete image (a save did not finish, or none "
			"was made)\n", name);
		return 0;
	}
	if (memcmp(header->e_ident, ELFMAG, SELFMAG) || header->e_ident[EI_CLASS] != ELFCLASS64 ||
	    header->e_ident[EI_DATA] != ELFDATA2LSB || header->e_type != ET_CORE ||
	    header->e_phentsize != sizeof(Elf64_Phdr)) {
		fprintf(stderr, "khib: %s: not a khib image (a little-endian ELF64 core)\n", name);
		return 0;
	}
	return 1;
}

/* The largest descriptor a note of this owner and type may have. */
static uint64_t largest(int vmcoreinfo, uint32_t type)
{
	if (vmcoreinfo)
		return KHIB_VMCOREINFO_MAX;
	switch (type) {
	case KHIB_NOTE_SEGMENTS:
		return (uint64_t)KHIB_SEGMENTS_MAX * sizeof(struct khib_record);
	case KHIB_NOTE_META:
		return KHIB_META_MAX;
	case KHIB_NOTE_LAYOUT:
		return sizeof(struct khib_layout) + (uint64_t)KHIB_PAIRS_MAX * sizeof(struct khib_pair);
	case KHIB_NOTE_SEAL:
		return sizeof(struct khib_seal);
	default:
		return 0;
	}
}

/* Keep one note's descriptor where it belongs (each once); -1 for a malformed one. */
static int keep_note(struct khib_image *image, int vmcoreinfo, uint32_t type, char *desc,
		     uint64_t size, size_t *nrecords, int *sealed)
{
	if (vmcoreinfo && !image->vmcoreinfo) {
		image->vmcoreinfo = desc;
		image->vmcoreinfo_size = (size_t)size;
	} else if (!vmcoreinfo && type == KHIB_NOTE_SEGMENTS && !image->records &&
		   size % sizeof(struct khib_record) == 0) {
		image->records = (struct khib_record *)desc;
		*nrecords = (size_t)(size / sizeof(struct khib_record));
	} else if (!vmcoreinfo && type == KHIB_NOTE_META && !image->meta) {
		image->meta = desc;
		image->meta_size = (size_t)size;
	} else if (!vmcoreinfo && type == KHIB_NOTE_LAYOUT && !image->pairs &&
		   size >= sizeof(image->layout) &&
		   (size - sizeof(image->layout)) % sizeof(struct khib_pair) == 0) {
		memcpy(&image->layout, desc, sizeof(image->layout));
		if (image->layout.npairs != (size - sizeof(image->layout)) / sizeof(struct khib_pair)) {
			free(desc);
			return -1;
		}
		memmove(desc, desc + sizeof(image->layout), (size_t)(size - sizeof(image->layout)));
		image->pairs = (struct khib_pair *)desc;
	} else if (!vmcoreinfo && type == KHIB_NOTE_SEAL && !*sealed &&
		   size == sizeof(image->seal)) {
		memcpy(&image->seal, desc, sizeof(image->seal));
		*sealed = 1;
		free(desc);
	} else {
		free(desc);
		return -1;
	}
	return 0;
}

/* The notes of the PT_NOTE: KHIB's own and the old kernel's VMCOREINFO, nothing else. */
static int read_notes(int fd, const char *name, const Elf64_Phdr *p, struct khib_image *image,
		      size_t *nrecords, int *sealed)
{
	uint64_t at = 0;

	while (at < p->p_filesz) {
		Elf64_Nhdr note;
		char owner[12];
		uint64_t owner_size, desc_size, padded;
		char *desc;
		int vmcoreinfo;

		if (p->p_filesz - at < sizeof(note) ||
		    khib_pread_full(fd, &note, sizeof(note), p->p_offset + at) < 0 ||
		    note.n_namesz > sizeof(owner))
			goto malformed;
		owner_size = ((uint64_t)note.n_namesz + 3u) & ~(uint64_t)3u;
		if (p->p_filesz - at - sizeof(note) < owner_size ||
		    khib_pread_full(fd, owner, (size_t)owner_size,
				    p->p_offset + at + sizeof(note)) < 0)
			goto malformed;
		vmcoreinfo = note.n_namesz == 11 && !memcmp(owner, KHIB_VMCOREINFO_NAME, 11);
		if (!vmcoreinfo && (note.n_namesz != 5 || memcmp(owner, KHIB_NOTE_NAME, 5)))
			goto malformed;
		desc_size = note.n_descsz;
		padded = (desc_size + 3u) & ~(uint64_t)3u;
		if (desc_size > largest(vmcoreinfo, note.n_type) ||
		    p->p_filesz - at - sizeof(note) - owner_size < padded)
			goto malformed;
		desc = malloc((size_t)desc_size + 1u);
		if (!desc)
			goto malformed;
		if (khib_pread_full(fd, desc, (size_t)desc_size,
				    p->p_offset + at + sizeof(note) + owner_size) < 0) {
			free(desc);
			goto malformed;
		}
		desc[desc_size] = '\0';
		if (keep_note(image, vmcoreinfo, note.n_type, desc, desc_size, nrecords, sealed) < 0)
			goto malformed;
		at += sizeof(note) + owner_size + padded;
	}
	return 0;
malformed:
	fprintf(stderr, "khib: %s: not a khib image: its notes are malformed\n", name);
	return -1;
}

/*
 * One memory header against its record: not empty, in ascending order without
 * overlap, stored bytes inside the image after those of every data segment before it
 * (stored_end), kinds that agree.  -1 names the segment.
 */
static int sane_segment(const Elf64_Phdr *p, const struct khib_record *record,
			const struct khib_image *image, uint64_t stored_end, uint64_t data_end)
{
	const struct khib_segment *last = image->count ? &image->segments[image->count - 1] : NULL;

	if (record->paddr != p->p_paddr || record->memsz != p->p_memsz ||
	    record->kind > KHIB_FREE || (record->kind == KHIB_DATA) != (p->p_filesz != 0))
		return -1;
	if (!p->p_memsz || p->p_paddr + p->p_memsz < p->p_paddr || (last && p->p_paddr < last->paddr + last->memsz))
		return -1;
	if (record->kind != KHIB_DATA)
		return record->crc32 ? -1 : 0;
	return p->p_offset < stored_end || p->p_offset > data_end ||
	       p->p_filesz > data_end - p->p_offset ? -1 : 0;
}

/* Read an image's segments back: program headers, checked against the KHIB notes. */
int khib_read_image(int fd, const char *name, struct khib_image *image, uint16_t *machine)
{
	Elf64_Ehdr header;
	Elf64_Phdr *phdrs = NULL;
	size_t loads = 0, nrecords = 0, notes = 0;
	uint64_t table, stored_end = KHIB_PAGE;
	int sealed = 0, status = -1;

	*image = (struct khib_image){0};
	if (!complete(fd, name, &header))
		return -1;
	*machine = header.e_machine;
	table = (uint64_t)header.e_phnum * sizeof(*phdrs);
	if (!header.e_phnum || header.e_phoff < KHIB_PAGE ||
	    header.e_phoff > UINT64_MAX - table) {
		fprintf(stderr, "khib: %s: not a khib image: its program headers are out of place\n",
			name);
		return -1;
	}
	phdrs = calloc(header.e_phnum, sizeof(*phdrs));
	if (!phdrs || khib_pread_full(fd, phdrs, (size_t)table, header.e_phoff) < 0) {
		fprintf(stderr, "khib: %s: no complete image (its headers are cut short)\n", name);
		goto out;
	}
	for (unsigned i = 0; i < header.e_phnum; i++) {
		const Elf64_Phdr *p = &phdrs[i];
		if (p->p_type != PT_NOTE)
			continue;
		if (notes++ || p->p_filesz > KHIB_NOTES_MAX || p->p_offset < header.e_phoff + table ||
		    p->p_offset > UINT64_MAX - p->p_filesz) {
			fprintf(stderr, "khib: %s: not a khib image: its notes are out of place\n",
				name);
			goto out;
		}
		if (read_notes(fd, name, p, image, &nrecords, &sealed) < 0)
			goto out;
	}
	if (!sealed || !image->records) {
		fprintf(stderr, "khib: %s: the image has no seal (made by an older khib-save?)\n",
			name);
		goto out;
	}
	for (unsigned i = 0; i < header.e_phnum; i++) {
		const Elf64_Phdr *p = &phdrs[i];
		if (p->p_type == PT_NOTE)
			continue;
		if (p->p_type != KHIB_PT_MEMORY || loads >= nrecords ||
		    sane_segment(p, &image->records[loads], image, stored_end, header.e_phoff) < 0) {
			fprintf(stderr, "khib: %s: segment %zu does not match its record, or is out "
				"of place\n", name, loads);
			goto out;
		}
		if (khib_append(image, p->p_paddr, p->p_memsz, (enum khib_kind)image->records[loads].kind,
				image->records[loads].crc32, 0) < 0)
			goto out;
		image->segments[image->count - 1].offset = p->p_offset;
		image->segments[image->count - 1].filesz = p->p_filesz;
		if (p->p_filesz)
			stored_end = p->p_offset + p->p_filesz;
		loads++;
	}
	if (loads != nrecords) {
		fprintf(stderr, "khib: %s: %zu segments, %zu records\n", name, loads, nrecords);
		goto out;
	}
	image->phdrs = phdrs;
	image->phdrs_size = (size_t)table;
	phdrs = NULL;
	status = 0;
out:
	if (status)
		khib_free(image);
	free(phdrs);
	return status;
}
