/*
 * khib-save: stream the old kernel's memory into a khib image (see khib-image.h).
 *
 *   khib-save --vmcore /proc/vmcore -o IMAGE [--exclude RANGES] [--meta FILE] [--limit N]
 *             [--key FILE]
 *   khib-save --mem /dev/mem --ranges RANGES -o IMAGE [--exclude RANGES] [--meta FILE]
 *             [--limit N] [--key FILE]
 *             [--vmcoreinfo ADDR:SIZE [--control-page ADDR] [--kernel-code ADDR]]
 *
 * --exclude leaves out the System RAM its file lists (in B: B's own /proc/iomem, the
 * memory B runs in, which holds B and not the old kernel; a crashkernel= reservation in
 * it is RAM B never touches, so it stays in).  --meta records a file's bytes in the
 * image; --limit: the image must fit in the first N bytes of IMAGE; --key seals it with
 * an HMAC-SHA256 too.  --vmcoreinfo names the old kernel's VMCOREINFO note (its
 * /sys/kernel/vmcoreinfo): the note goes into the image, and the pages the old kernel
 * had free are recorded, not read and not stored (freepages.c; --control-page: its kexec
 * control page, whose backup list says where the window's pages went; --kernel-code:
 * the start of its "Kernel code", i386's PAGE_OFFSET).  When they cannot be known, it
 * says why and stores them.
 *
 * The first page of IMAGE is zeroed before anything else, so a save that fails leaves no
 * image that looks complete.  One pass over the memory: each page is free, zero or data;
 * data runs are CRC-32'd and written in LZ4 blocks from the second page of IMAGE on,
 * never past the room IMAGE has (a block device's size, a file system's free space,
 * --limit).  Then the program headers and notes with the seal after the data, and last
 * the ELF header, its magic written after everything else is on the disk.
 */
#define _GNU_SOURCE
#include "khib-image.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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
		"[--exclude RANGES] [--meta FILE] [--limit BYTES] [--key FILE]\n"
		"       [--vmcoreinfo ADDR:SIZE [--control-page ADDR] [--kernel-code ADDR]]\n");
	return 2;
}

/* Where the image grows: buffered, hashed as written, never past its room. */
struct writer {
	int out;
	uint64_t at;              /* the image offset of buffer[0] */
	uint64_t limit;
	size_t used;
	struct khib_sha256 sha;   /* of the stored bytes, in file order */
	unsigned char buffer[CHUNK];
};

static int flush(struct writer *w)
{
	if (w->used && khib_pwrite_full(w->out, w->buffer, w->used, w->at) < 0)
		return -1;
	w->at += w->used;
	w->used = 0;
	return 0;
}

/* Append to the image; -1 with errno EFBIG once it would outgrow its room. */
static int put(struct writer *w, const void *data, size_t size, int hashed)
{
	const unsigned char *bytes = data;

	if (w->at + w->used + size > w->limit) {
		errno = EFBIG;
		return -1;
	}
	if (hashed)
		khib_sha256_update(&w->sha, data, size);
	while (size) {
		size_t room = sizeof(w->buffer) - w->used;
		size_t length = size < room ? size : room;
		memcpy(w->buffer + w->used, bytes, length);
		w->used += length;
		bytes += length;
		size -= length;
		if (w->used == sizeof(w->buffer) && flush(w) < 0)
			return -1;
	}
	return 0;
}

static uint64_t position(const struct writer *w)
{
	return w->at + w->used;
}

/* The memory of the data run being saved, a block at a time. */
struct data_run {
	size_t segment;           /* its index in the image, or SIZE_MAX */
	size_t used;
	unsigned char block[KHIB_BLOCK];
	unsigned char packed[LZ4_COMPRESSBOUND(KHIB_BLOCK)];
};

/* One block: LZ4 (lz4 -1's speed) when that is smaller, else its bytes as they are. */
static int put_block(struct writer *w, struct data_run *run)
{
	int packed, raw;
	uint32_t length, word;
	unsigned char header[4];

	if (!run->used)
		return 0;
	packed = LZ4_compress_default((const char *)run->block, (char *)run->packed,
				      (int)run->used, (int)sizeof(run->packed));
	raw = packed <= 0 || (size_t)packed >= run->used;
	length = raw ? (uint32_t)run->used : (uint32_t)packed;
	word = length | (raw ? KHIB_BLOCK_RAW : 0);
	header[0] = (unsigned char)word;
	header[1] = (unsigned char)(word >> 8);
	header[2] = (unsigned char)(word >> 16);
	header[3] = (unsigned char)(word >> 24);
	run->used = 0;
	return put(w, header, 4, 1) < 0 ||
	       put(w, raw ? run->block : run->packed, length, 1) < 0 ? -1 : 0;
}

/* The data run ends: its last block out, its size in the image known. */
static int end_run(struct writer *w, struct data_run *run, struct khib_image *image)
{
	struct khib_segment *s;

	if (run->segment == SIZE_MAX)
		return 0;
	if (put_block(w, run) < 0)
		return -1;
	s = &image->segments[run->segment];
	s->filesz = position(w) - s->offset;
	run->segment = SIZE_MAX;
	return 0;
}

/* The kind of one page: free (by the old kernel's own account), zero, or data. */
static enum khib_kind kind_of(const struct khib_free_pages *free_pages, uint64_t paddr,
			      const unsigned char *page, size_t size)
{
	if (khib_page_free(free_pages, paddr / KHIB_PAGE))
		return KHIB_FREE;
	return khib_is_zero(page, size) ? KHIB_ZERO : KHIB_DATA;
}

/* Whether every page of [paddr, paddr + length) is free: nothing to read there. */
static int all_free(const struct khib_free_pages *free_pages, uint64_t paddr, size_t length)
{
	for (size_t page = 0; page < length; page += KHIB_PAGE)
		if (!khib_page_free(free_pages, (paddr + page) / KHIB_PAGE))
			return 0;
	return 1;
}

/* One page into the image: a new segment or the last one's continuation. */
static int add_page(struct writer *w, struct data_run *run, struct khib_image *image,
		    uint64_t paddr, enum khib_kind kind, const unsigned char *page, size_t size)
{
	struct khib_segment *last = image->count ? &image->segments[image->count - 1] : NULL;
	int continues = last && last->kind == kind && last->paddr + last->memsz == paddr;
	uint32_t crc = kind != KHIB_DATA ? 0 :
		khib_crc32(continues ? last->crc32 : 0, page, size);

	if (!continues && end_run(w, run, image) < 0)
		return -1;
	if (khib_append(image, paddr, size, kind, crc, 1) < 0)
		return -1;
	if (kind != KHIB_DATA)
		return 0;
	if (!continues) {
		run->segment = image->count - 1;
		image->segments[run->segment].offset = position(w);
	}
	memcpy(run->block + run->used, page, size);
	run->used += size;
	return run->used == KHIB_BLOCK ? put_block(w, run) : 0;
}

/* The one pass: every page of the ranges, free (not read), zero or data. */
static int save_pages(int fd, const struct khib_range *ranges, size_t count, uint64_t total,
		      const struct khib_free_pages *free_pages, unsigned char *buffer,
		      struct writer *w, struct data_run *run, struct khib_image *image,
		      uint64_t pages[3])
{
	uint64_t done = 0, shown = 0;

	for (size_t r = 0; r < count; r++) {
		for (uint64_t at = 0; at < ranges[r].size;) {
			size_t length = ranges[r].size - at < CHUNK ? (size_t)(ranges[r].size - at) : CHUNK;
			int skip = all_free(free_pages, ranges[r].paddr + at, length);
			if (!skip && khib_mem_copy(fd, buffer, length, ranges[r].offset + at, 0) < 0)
				return -1;
			for (size_t page = 0; page < length; page += KHIB_PAGE) {
				size_t size = length - page < KHIB_PAGE ? length - page : KHIB_PAGE;
				uint64_t paddr = ranges[r].paddr + at + page;
				enum khib_kind kind = skip ? KHIB_FREE :
					kind_of(free_pages, paddr, buffer + page, size);
				if (add_page(w, run, image, paddr, kind, buffer + page, size) < 0)
					return -1;
				pages[kind]++;
			}
			at += length;
			done += length;
			if (done - shown >= PROGRESS_EVERY || done == total) {
				khib_progress("saved", done, total);
				shown = done;
			}
		}
	}
	return end_run(w, run, image);
}

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
 * filled in: *seal points at them), and the ELF header that will point there.
 */
static unsigned char *build_trailer(const struct khib_image *image, uint64_t at,
				    const char *meta, size_t meta_size,
				    const struct khib_free_pages *f, uint64_t free_recorded,
				    size_t *size, Elf64_Ehdr *eh, struct khib_sealed_notes *notes,
				    struct khib_seal **seal)
{
	size_t phnum = image->count + 1;
	size_t records_size = image->count * sizeof(struct khib_record);
	size_t pairs_size = f->nwindow * sizeof(struct khib_pair);
	struct khib_layout layout = {f->page_offset, free_recorded, f->counted, f->kernel_count,
				     f->nwindow};
	size_t notes_size = note_size(KHIB_NOTE_NAME, records_size) +
		note_size(KHIB_NOTE_NAME, meta_size) +
		note_size(KHIB_NOTE_NAME, sizeof(layout) + pairs_size) +
		(f->vmcoreinfo ? note_size(KHIB_VMCOREINFO_NAME, f->vmcoreinfo_size) : 0) +
		note_size(KHIB_NOTE_NAME, sizeof(**seal));
	size_t phdrs_size = phnum * sizeof(Elf64_Phdr);
	unsigned char *trailer, *cursor;
	struct khib_record *records;
	Elf64_Phdr *ph;

	if (phnum > 0xfffe) {
		fprintf(stderr, "khib-save: %zu segments: more than an ELF header can count\n",
			image->count);
		return NULL;
	}
	*size = phdrs_size + notes_size;
	trailer = calloc(1, *size);
	if (!trailer)
		return NULL;
	*eh = khib_core_header(MACHINE, at, (uint16_t)phnum);
	ph = (Elf64_Phdr *)trailer;
	ph[0] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = at + phdrs_size,
			     .p_filesz = notes_size};
	cursor = trailer + phdrs_size;
	records = (struct khib_record *)(cursor + desc_offset(KHIB_NOTE_NAME));
	*notes = (struct khib_sealed_notes){.phdrs = trailer, .phdrs_size = phdrs_size,
					    .records = records, .records_size = records_size,
					    .meta_size = meta_size};
	cursor = put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_SEGMENTS, NULL, records_size);
	notes->meta = cursor + desc_offset(KHIB_NOTE_NAME);
	cursor = put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_META, meta, meta_size);
	notes->layout = (struct khib_layout *)(cursor + desc_offset(KHIB_NOTE_NAME));
	notes->pairs = (struct khib_pair *)(notes->layout + 1);
	cursor = put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_LAYOUT, NULL,
			  sizeof(layout) + pairs_size);
	memcpy((void *)notes->layout, &layout, sizeof(layout));
	if (pairs_size)
		memcpy((void *)notes->pairs, f->window, pairs_size);
	if (f->vmcoreinfo) {
		notes->vmcoreinfo = cursor + desc_offset(KHIB_VMCOREINFO_NAME);
		notes->vmcoreinfo_size = f->vmcoreinfo_size;
		cursor = put_note(cursor, KHIB_VMCOREINFO_NAME, 0, f->vmcoreinfo,
				  f->vmcoreinfo_size);
	}
	*seal = (struct khib_seal *)(cursor + desc_offset(KHIB_NOTE_NAME));
	put_note(cursor, KHIB_NOTE_NAME, KHIB_NOTE_SEAL, NULL, sizeof(**seal));
	for (size_t i = 0; i < image->count; i++) {
		const struct khib_segment *s = &image->segments[i];
		ph[i + 1] = (Elf64_Phdr){
			.p_type = KHIB_PT_MEMORY, .p_flags = PF_R | PF_W | PF_X,
			.p_offset = s->kind == KHIB_DATA ? s->offset : 0, .p_paddr = s->paddr,
			.p_filesz = s->kind == KHIB_DATA ? s->filesz : 0, .p_memsz = s->memsz,
			.p_align = KHIB_PAGE,
		};
		records[i] = (struct khib_record){s->paddr, s->memsz, s->crc32, (uint32_t)s->kind};
	}
	(*seal)->image_size = at + *size;
	return trailer;
}

/* How many bytes the output can hold: a block device's size, a file's room to grow. */
static uint64_t room(int out)
{
	struct stat st;
	struct statvfs fs;
	uint64_t bytes;

	if (fstat(out, &st) < 0)
		return UINT64_MAX;
	if (S_ISBLK(st.st_mode))
		return ioctl(out, BLKGETSIZE64, &bytes) < 0 ? UINT64_MAX : bytes;
	if (S_ISREG(st.st_mode) && fstatvfs(out, &fs) == 0)
		return (uint64_t)fs.f_bavail * fs.f_frsize + (uint64_t)st.st_blocks * 512u;
	return UINT64_MAX;
}

/* Any earlier image in the output stops looking complete before anything else is written. */
static int invalidate(int out)
{
	static const unsigned char zeros[KHIB_PAGE];

	return khib_pwrite_full(out, zeros, sizeof(zeros), 0) < 0 || fsync(out) < 0 ? -1 : 0;
}

/* What the caller asked to be recorded with the image (--meta FILE). */
static char *read_meta(const char *path, size_t *size)
{
	FILE *file = fopen(path, "rb");
	char *meta = malloc(KHIB_META_MAX + 1);

	*size = 0;
	if (!file || !meta) {
		fprintf(stderr, "khib-save: %s: %s\n", path, strerror(errno));
		if (file)
			fclose(file);
		free(meta);
		return NULL;
	}
	*size = fread(meta, 1, KHIB_META_MAX + 1, file);
	fclose(file);
	if (*size > KHIB_META_MAX) {
		fprintf(stderr, "khib-save: %s: more than %u bytes\n", path, KHIB_META_MAX);
		free(meta);
		return NULL;
	}
	return meta;
}

/*
 * Data, headers and notes are on the disk: the ELF header goes last, its magic after the
 * rest of it, so that an image is complete exactly when it has one.
 */
static int seal_image(int out, Elf64_Ehdr *eh)
{
	unsigned char magic[SELFMAG];

	memcpy(magic, eh->e_ident, SELFMAG);
	memset(eh->e_ident, 0, SELFMAG);
	if (khib_pwrite_full(out, eh, sizeof(*eh), 0) < 0 || fsync(out) < 0)
		return -1;
	return khib_pwrite_full(out, magic, SELFMAG, 0) < 0 || fsync(out) < 0 ? -1 : 0;
}

/* ADDR or ADDR:SIZE (any base strtoull takes); 0 when malformed. */
static int parse_pair(const char *text, uint64_t *first, uint64_t *second)
{
	char *end;

	errno = 0;
	*first = strtoull(text, &end, 0);
	if (second) {
		if (*end != ':')
			return 0;
		*second = strtoull(end + 1, &end, 0);
	}
	return !errno && !*end;
}

/* The old kernel's free pages, or why they stay unknown (said on standard error). */
static void find_free_pages(int fd, const struct khib_range *ranges, size_t count,
			    const struct khib_range *all, size_t nall, const char *vmcoreinfo,
			    const char *control, const char *kernel_code,
			    struct khib_free_pages *free_pages)
{
	uint64_t note = 0, note_size = 0, control_page = 0, code = 0;

	*free_pages = (struct khib_free_pages){0};
	if (!vmcoreinfo)
		return;
	if (!parse_pair(vmcoreinfo, &note, &note_size) ||
	    (control && !parse_pair(control, &control_page, NULL)) ||
	    (kernel_code && !parse_pair(kernel_code, &code, NULL)))
		snprintf(free_pages->why, sizeof(free_pages->why), "malformed --vmcoreinfo, "
			 "--control-page or --kernel-code");
	else if (khib_find_free_pages(fd, ranges, count, all, nall, note, note_size,
				      control_page, code, free_pages) == 0)
		return;
	fprintf(stderr, "khib-save: the old kernel's free pages are stored: %s\n",
		free_pages->why);
}

int khib_save_main(int argc, char **argv)
{
	const char *vmcore = NULL, *mem = NULL, *ranges_path = NULL, *output = NULL;
	const char *exclude = NULL, *meta_path = NULL, *limit_text = NULL, *key_path = NULL;
	const char *vmcoreinfo = NULL, *control = NULL, *kernel_code = NULL;
	struct khib_range *ranges = NULL, *all = NULL, *holes = NULL;
	struct khib_image image = {0};
	struct khib_free_pages free_pages = {0};
	struct khib_sealed_notes notes;
	struct khib_seal *sealed;
	struct khib_key key = {0};
	struct writer *w = calloc(1, sizeof(*w));
	struct data_run *run = calloc(1, sizeof(*run));
	Elf64_Ehdr eh;
	unsigned char data_digest[32];
	size_t count = 0, nall = 0, nholes = 0, meta_size = 0, trailer_size = 0;
	uint64_t total = 0, stored, pages[3] = {0}, limit, room_left;
	unsigned char *buffer = malloc(CHUNK), *trailer = NULL;
	char *meta = NULL, *end = NULL;
	double started = khib_seconds(), seconds;
	int fd, out, status = 1;

	for (int i = 1; i < argc; i++) {
		const char **slot = !strcmp(argv[i], "--vmcore") ? &vmcore :
				    !strcmp(argv[i], "--mem") ? &mem :
				    !strcmp(argv[i], "--ranges") ? &ranges_path :
				    !strcmp(argv[i], "--exclude") ? &exclude :
				    !strcmp(argv[i], "--meta") ? &meta_path :
				    !strcmp(argv[i], "--limit") ? &limit_text :
				    !strcmp(argv[i], "--key") ? &key_path :
				    !strcmp(argv[i], "--vmcoreinfo") ? &vmcoreinfo :
				    !strcmp(argv[i], "--control-page") ? &control :
				    !strcmp(argv[i], "--kernel-code") ? &kernel_code :
				    !strcmp(argv[i], "-o") ? &output : NULL;
		if (!slot || ++i == argc)
			return usage();
		*slot = argv[i];
	}
	limit = limit_text ? strtoull(limit_text, &end, 0) : UINT64_MAX;
	if (!buffer || !w || !run || !output || !!vmcore == !!mem || (mem && !ranges_path) ||
	    (limit_text && (*end || !limit)) || (vmcoreinfo && !mem))
		return usage();
	if ((meta_path && !(meta = read_meta(meta_path, &meta_size))) ||
	    (key_path && khib_read_key(key_path, &key) < 0))
		return 1;
	fd = open(vmcore ? vmcore : mem, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", vmcore ? vmcore : mem, strerror(errno));
		return 1;
	}
	if ((vmcore ? khib_vmcore_ranges(fd, vmcore, &ranges, &count)
		    : khib_read_ranges(ranges_path, &ranges, &count)) < 0 ||
	    (mem && khib_read_ranges(ranges_path, &all, &nall) < 0) ||
	    (exclude && (khib_read_ranges(exclude, &holes, &nholes) < 0 ||
			 khib_exclude(&ranges, &count, holes, nholes) < 0)))
		return 1;
	free(holes);
	for (size_t r = 0; r < count; r++)
		total += ranges[r].size;
	find_free_pages(fd, ranges, count, all, nall, vmcoreinfo, control, kernel_code,
			&free_pages);
	out = open(output, O_WRONLY | O_CREAT, 0644);
	if (out < 0 || invalidate(out) < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", output, strerror(errno));
		return 1;
	}
	room_left = room(out);
	*w = (struct writer){.out = out, .at = KHIB_PAGE,
			     .limit = room_left < limit ? room_left : limit};
	run->segment = SIZE_MAX;
	khib_sha256_init(&w->sha);
	if (save_pages(fd, ranges, count, total, &free_pages, buffer, w, run, &image, pages) < 0) {
		if (errno == EFBIG)
			fprintf(stderr, "khib-save: %s: the image outgrew the room there (%llu MiB): "
				"nothing saved\n", output, (unsigned long long)(w->limit >> 20));
		else
			fprintf(stderr, "khib-save: saving %s: %s\n", output, strerror(errno));
		goto out;
	}
	stored = position(w) - KHIB_PAGE;
	khib_sha256_final(&w->sha, data_digest);
	trailer = build_trailer(&image, position(w), meta, meta_size, &free_pages,
				pages[KHIB_FREE], &trailer_size, &eh, &notes, &sealed);
	if (!trailer)
		goto out;
	khib_seal_digests(data_digest, &notes, &key, sealed);
	if (put(w, trailer, trailer_size, 0) < 0 || flush(w) < 0 ||
	    (ftruncate(out, (off_t)w->at) < 0 && errno != EINVAL) || /* EINVAL: a device */
	    seal_image(out, &eh) < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", output, errno == EFBIG ?
			"the image outgrew the room there: nothing saved" : strerror(errno));
		goto out;
	}
	seconds = khib_seconds() - started;
	printf("khib-save: %s: %zu segments, %llu MiB of data stored in %llu MiB (LZ4), %llu "
	       "MiB scanned, %llu zero pages and %llu free pages recorded, in %.1f s (%.0f MiB/s "
	       "scanned)%s\n", output, image.count,
	       (unsigned long long)(pages[KHIB_DATA] >> 8), (unsigned long long)(stored >> 20),
	       (unsigned long long)(total >> 20), (unsigned long long)pages[KHIB_ZERO],
	       (unsigned long long)pages[KHIB_FREE], seconds,
	       seconds > 0 ? (double)(total >> 20) / seconds : 0.0, key.set ? ", keyed" : "");
	if (free_pages.bitmap)
		printf("khib-save: free pages: the walk found %llu, A counted %llu "
		       "(NR_FREE_PAGES)\n", (unsigned long long)free_pages.counted,
		       (unsigned long long)free_pages.kernel_count);
	status = 0;
out:
	khib_free(&image);
	free(ranges);
	free(all);
	free(buffer);
	free(trailer);
	free(meta);
	free(w);
	free(run);
	free(free_pages.bitmap);
	free(free_pages.window);
	free(free_pages.vmcoreinfo);
	close(fd);
	close(out);
	return status;
}
