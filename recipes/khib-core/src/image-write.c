/*
 * Writing an image's trailer: the program headers and notes after the data, and last the
 * ELF header, its magic after everything else is on the disk.
 */
#include "khib-core.h"
#include "image-write.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One note: header, name, then its descriptor at 4-byte alignment (filled in later if NULL). */
static unsigned char *put_note(unsigned char *at, const char *name, uint32_t type,
			       const void *desc, size_t size)
{
	Elf64_Nhdr *note = (Elf64_Nhdr *)at;
	size_t namesz = strlen(name) + 1;

	*note = (Elf64_Nhdr){.n_namesz = (uint32_t)namesz, .n_descsz = (uint32_t)size,
			     .n_type = type};
	memcpy(note + 1, name, namesz);
	at += sizeof(*note) + ((namesz + 3u) & ~(size_t)3u);
	if (desc)
		memcpy(at, desc, size);
	return at + ((size + 3u) & ~(size_t)3u);
}

static size_t note_size(const char *name, size_t desc)
{
	return sizeof(Elf64_Nhdr) + ((strlen(name) + 4u) & ~(size_t)3u) +
	       ((desc + 3u) & ~(size_t)3u);
}

static size_t desc_offset(const char *name)
{
	return sizeof(Elf64_Nhdr) + ((strlen(name) + 4u) & ~(size_t)3u);
}

/*
 * After the data: the program headers and the notes (the seal's digests still to be
 * filled in: *seal points at its descriptor), and the ELF header that will point there.
 * A note's descriptor is only 4-byte aligned: records, layout and seal go in by memcpy.
 */
unsigned char *khib_build_trailer(const struct khib_image *image, uint64_t at,
				  const char *meta, size_t meta_size,
				  const struct khib_free_pages *f, uint64_t free_recorded,
				  size_t *size, Elf64_Ehdr *eh, struct khib_sealed_notes *notes,
				  unsigned char **seal)
{
	size_t phnum = image->count + 1;
	size_t records_size = image->count * sizeof(struct khib_record);
	size_t pairs_size = f->nwindow * sizeof(struct khib_pair);
	struct khib_layout layout = {f->page_offset, free_recorded, f->counted, f->kernel_count,
				     f->nwindow};
	struct khib_seal sized = {0};
	size_t notes_size = note_size(KHIB_NOTE_NAME, records_size) +
		note_size(KHIB_NOTE_NAME, meta_size) +
		note_size(KHIB_NOTE_NAME, sizeof(layout) + pairs_size) +
		(f->vmcoreinfo ? note_size(KHIB_VMCOREINFO_NAME, f->vmcoreinfo_size) : 0) +
		note_size(KHIB_NOTE_NAME, sizeof(sized));
	size_t phdrs_size = phnum * sizeof(Elf64_Phdr);
	unsigned char *trailer, *cursor, *records, *pairs;
	Elf64_Phdr *ph;

	*size = phdrs_size + notes_size;
	trailer = calloc(1, *size);
	if (!trailer)
		return NULL;
	*eh = khib_core_header(KHIB_MACHINE, at, (uint16_t)phnum);
	ph = (Elf64_Phdr *)trailer;
	ph[0] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = at + phdrs_size,
			     .p_filesz = notes_size};
	cursor = trailer + phdrs_size;
	records = cursor + desc_offset(KHIB_NOTE_NAME);
	*notes = (struct khib_sealed_notes){.phdrs = trailer, .phdrs_size = phdrs_size,
					    .records = records, .records_size = records_size,
					    .meta_size = meta_size, .layout = layout};
	cursor = put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_SEGMENTS, NULL, records_size);
	notes->meta = cursor + desc_offset(KHIB_NOTE_NAME);
	cursor = put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_META, meta, meta_size);
	pairs = cursor + desc_offset(KHIB_NOTE_NAME) + sizeof(layout);
	notes->pairs = pairs;
	cursor = put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_LAYOUT, NULL,
			  sizeof(layout) + pairs_size);
	memcpy(pairs - sizeof(layout), &layout, sizeof(layout));
	if (pairs_size)
		memcpy(pairs, f->window, pairs_size);
	if (f->vmcoreinfo) {
		notes->vmcoreinfo = cursor + desc_offset(KHIB_VMCOREINFO_NAME);
		notes->vmcoreinfo_size = f->vmcoreinfo_size;
		cursor = put_note(cursor, KHIB_VMCOREINFO_NAME, 0, f->vmcoreinfo,
				  f->vmcoreinfo_size);
	}
	*seal = cursor + desc_offset(KHIB_NOTE_NAME);
	sized.image_size = at + *size;
	put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_SEAL, &sized, sizeof(sized));
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		struct khib_record record = {s->paddr, s->memsz, s->crc32, (uint32_t)s->kind};
		ph[i + 1] = (Elf64_Phdr){
			.p_type = KHIB_PT_MEMORY, .p_flags = PF_R | PF_W | PF_X,
			.p_offset = s->kind == KHIB_DATA ? s->offset : 0, .p_paddr = s->paddr,
			.p_filesz = s->kind == KHIB_DATA ? s->filesz : 0, .p_memsz = s->memsz,
			.p_align = KHIB_PAGE,
		};
		memcpy(records + i * sizeof(record), &record, sizeof(record));
	}
	return trailer;
}

/*
 * Data, headers and notes are on the disk: the ELF header goes last, its magic after the
 * rest of it, so that an image is complete exactly when it has one.
 */
int khib_seal_image(int out, Elf64_Ehdr *eh)
{
	unsigned char magic[SELFMAG];

	memcpy(magic, eh->e_ident, SELFMAG);
	memset(eh->e_ident, 0, SELFMAG);
	if (khib_pwrite_full(out, eh, sizeof(*eh), 0) < 0 || fsync(out) < 0)
		return -1;
	return khib_pwrite_full(out, magic, SELFMAG, 0) < 0 || fsync(out) < 0 ? -1 : 0;
}

