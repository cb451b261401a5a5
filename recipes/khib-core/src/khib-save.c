/*
 * khib-save: stream the old kernel's memory into a khib image (see khib-format.h).
 *
 *   khib-save --vmcore /proc/vmcore -o IMAGE [--exclude RANGES] [--meta FILE] [--limit N]
 *             [--key FILE]
 *   khib-save --mem /dev/mem --ranges RANGES -o IMAGE [--exclude RANGES] [--meta FILE]
 *             [--limit N] [--key FILE]
 *             [--vmcoreinfo ADDR:SIZE [--control-page ADDR] [--kernel-code ADDR]]
 *             [--threads N]
 *
 * --threads N: the blocks are packed by N threads (default: the online CPUs, at most 4;
 * the image is the same whatever N).  --low FILE: A's memory between 4 KiB and 640 KiB is read from FILE (offset = physical
 * address: /sys/kernel/kexec_jump_low, what B's kernel kept of it before its boot wrote
 * there), not from --vmcore or --mem, and stays in though --exclude lists it.
 * --cover RANGES: the image must hold exactly the memory its file lists (the caller's
 * contract), checked before anything after the data is written.
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
#include "khib-core.h"
#include "image-write.h"
#include "save-pages.h"

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


static int usage(void)
{
	fprintf(stderr, "usage: khib-save (--vmcore FILE | --mem FILE --ranges FILE) -o IMAGE "
		"[--exclude RANGES] [--meta FILE] [--limit BYTES] [--key FILE]\n"
		"       [--low FILE] [--cover RANGES] [--vmcoreinfo ADDR:SIZE [--control-page ADDR] "
		"[--kernel-code ADDR]]\n       [--threads N]\n");
	return 2;
}

/*
 * Whether the image's segments, merged, are exactly the ranges path lists (--cover: what
 * the caller's contract says the image must hold); said on standard error if not.
 */
static int covers(const struct khib_image *image, const char *path, const char *output)
{
	struct khib_range *want = NULL;
	size_t nwant = 0, r = 0;
	int same = 1;

	if (khib_read_ranges(path, &want, &nwant) < 0)
		return 0;
	for (size_t i = 0; i < image->count && same;) {
		uint64_t start = image->segments[i].paddr, end = start + image->segments[i].memsz;
		while (++i < image->count && image->segments[i].paddr == end)
			end += image->segments[i].memsz;
		same = r < nwant && want[r].paddr == start && want[r].size == end - start;
		r++;
	}
	if (!same || r != nwant)
		fprintf(stderr, "khib-save: %s: the image would not hold exactly the memory %s "
			"lists (its run %zu differs): nothing saved\n", output, path, r);
	free(want);
	return same && r == nwant;
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

	/* fdatasync: the page's bytes, not the file's times (a journal commit here: 30 ms) */
	return khib_pwrite_full(out, zeros, sizeof(zeros), 0) < 0 || fdatasync(out) < 0 ? -1 : 0;
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

/* ADDR or ADDR:SIZE (any base strtoull takes); 0 when malformed. */
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
	if (!khib_parse_pair(vmcoreinfo, &note, &note_size) ||
	    (control && !khib_parse_pair(control, &control_page, NULL)) ||
	    (kernel_code && !khib_parse_pair(kernel_code, &code, NULL)))
		snprintf(free_pages->why, sizeof(free_pages->why), "malformed --vmcoreinfo, "
			 "--control-page or --kernel-code");
	else if (khib_find_free_pages(fd, ranges, count, all, nall, note, note_size,
				      control_page, code, free_pages) == 0)
		return;
	fprintf(stderr, "khib-save: the old kernel's free pages are stored: %s\n",
		free_pages->why);
}

/* A copy of count ranges, or NULL. */
static struct khib_range *copied(const struct khib_range *ranges, size_t count)
{
	struct khib_range *copy = malloc((count ? count : 1) * sizeof(*copy));

	if (copy && count)
		memcpy(copy, ranges, count * sizeof(*copy));
	return copy;
}

int khib_save_main(int argc, char **argv)
{
	const char *vmcore = NULL, *mem = NULL, *ranges_path = NULL, *output = NULL;
	const char *exclude = NULL, *meta_path = NULL, *limit_text = NULL, *key_path = NULL;
	const char *cover = NULL, *low = NULL;
	const char *vmcoreinfo = NULL, *control = NULL, *kernel_code = NULL, *threads = NULL;
	struct khib_range *ranges = NULL, *all = NULL, *holes = NULL, *saved = NULL;
	struct khib_image image = {0};
	struct khib_free_pages free_pages = {0};
	struct khib_sealed_notes notes;
	struct khib_seal seal;
	unsigned char *sealed;
	struct khib_key key = {0};
	struct khib_writer *w = calloc(1, sizeof(*w));
	struct khib_data_run *run = calloc(1, sizeof(*run));
	Elf64_Ehdr eh;
	unsigned char data_digest[32];
	size_t count = 0, nall = 0, nholes = 0, nsaved = 0, meta_size = 0, trailer_size = 0;
	uint64_t total = 0, stored, pages[3] = {0}, limit, room_left;
	unsigned char *buffer = malloc(KHIB_CHUNK), *trailer = NULL;
	char *meta = NULL, *end = NULL;
	double started = khib_seconds(), seconds;
	struct stat st;
	unsigned long thread_count = 0;
	int fd, out, low_fd = -1, status = 1;

	for (int i = 1; i < argc; i++) {
		const char **slot = !strcmp(argv[i], "--vmcore") ? &vmcore :
				    !strcmp(argv[i], "--mem") ? &mem :
				    !strcmp(argv[i], "--ranges") ? &ranges_path :
				    !strcmp(argv[i], "--exclude") ? &exclude :
				    !strcmp(argv[i], "--meta") ? &meta_path :
				    !strcmp(argv[i], "--limit") ? &limit_text :
				    !strcmp(argv[i], "--key") ? &key_path :
				    !strcmp(argv[i], "--cover") ? &cover :
				    !strcmp(argv[i], "--low") ? &low :
				    !strcmp(argv[i], "--vmcoreinfo") ? &vmcoreinfo :
				    !strcmp(argv[i], "--control-page") ? &control :
				    !strcmp(argv[i], "--kernel-code") ? &kernel_code :
				    !strcmp(argv[i], "--threads") ? &threads :
				    !strcmp(argv[i], "-o") ? &output : NULL;
		if (!slot || ++i == argc)
			return usage();
		*slot = argv[i];
	}
	limit = limit_text ? strtoull(limit_text, &end, 0) : UINT64_MAX;
	if (!buffer || !w || !run || !output || !!vmcore == !!mem || (mem && !ranges_path) ||
	    (limit_text && (*end || !limit)) || (vmcoreinfo && !mem))
		return usage();
	if (threads) {   /* a number, at least 1 (more than KHIB_THREADS_MAX: that many) */
		thread_count = strtoul(threads, &end, 10);
		if (threads[0] < '0' || threads[0] > '9' || *end || thread_count < 1 ||
		    thread_count > 4096)
			return usage();
	}
	if ((meta_path && !(meta = read_meta(meta_path, &meta_size))) ||
	    (key_path && khib_read_key(key_path, &key) < 0))
		return 1;
	fd = open(vmcore ? vmcore : mem, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", vmcore ? vmcore : mem, strerror(errno));
		return 1;
	}
	if (low && (low_fd = open(low, O_RDONLY)) < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", low, strerror(errno));
		return 1;
	}
	/* ranges: A's memory the running kernel does not hold, which the free-page walk
	 * reads; saved: what the image stores (with --low, A's 4 KiB-640 KiB too). */
	if ((vmcore ? khib_vmcore_ranges(fd, vmcore, &ranges, &count)
		    : khib_read_ranges(ranges_path, &ranges, &count)) < 0 ||
	    (mem && khib_read_ranges(ranges_path, &all, &nall) < 0) ||
	    (exclude && khib_read_ranges(exclude, &holes, &nholes) < 0))
		return 1;
	nsaved = count;
	saved = low ? copied(ranges, count) : NULL;
	if ((low && (!saved || khib_take_low(&saved, &nsaved, holes, nholes) < 0)) ||
	    khib_exclude(&ranges, &count, holes, nholes) < 0)
		return 1;
	if (!low) {
		saved = ranges;
		nsaved = count;
	}
	free(holes);
	for (size_t r = 0; r < nsaved; r++)
		total += saved[r].size;
	find_free_pages(fd, ranges, count, all, nall, vmcoreinfo, control, kernel_code,
			&free_pages);
	out = open(output, O_WRONLY | O_CREAT, 0600);
	if (out >= 0 && fstat(out, &st) == 0 && S_ISREG(st.st_mode) && fchmod(out, 0600) < 0) {
		close(out);   /* an earlier file keeps its mode otherwise: all of A's memory */
		out = -1;
	}
	if (out < 0 || invalidate(out) < 0) {
		fprintf(stderr, "khib-save: %s: %s\n", output, strerror(errno));
		return 1;
	}
	room_left = room(out);
	*w = (struct khib_writer){.out = out, .at = KHIB_PAGE,
			     .limit = room_left < limit ? room_left : limit};
	khib_sha256_init(&w->list);
	if (khib_blocks_start(run, threads ? (unsigned)thread_count :
			      (unsigned)sysconf(_SC_NPROCESSORS_ONLN)) < 0) {
		fprintf(stderr, "khib-save: %s\n", strerror(errno));
		goto out;
	}
	if (khib_save_pages(fd, low_fd, saved, nsaved, total, &free_pages, buffer, w, run, &image, pages) < 0) {
		if (errno == E2BIG)
			fprintf(stderr, "khib-save: %s: A's memory falls into more than %u runs: more "
				"than one image can describe: nothing saved\n", output,
				KHIB_SEGMENTS_MAX);
		else if (errno == EFBIG)
			fprintf(stderr, "khib-save: %s: the image outgrew the room there (%llu MiB): "
				"nothing saved\n", output, (unsigned long long)(w->limit >> 20));
		else
			fprintf(stderr, "khib-save: saving %s: %s\n", output, strerror(errno));
		goto out;
	}
	if (cover && !covers(&image, cover, output))
		goto out;
	stored = khib_position(w) - KHIB_PAGE;
	khib_sha256_final(&w->list, data_digest);
	trailer = khib_build_trailer(&image, khib_position(w), meta, meta_size, &free_pages,
				pages[KHIB_FREE], &trailer_size, &eh, &notes, &sealed);
	if (!trailer)
		goto out;
	memcpy(&seal, sealed, sizeof(seal));   /* the image's size, filled in */
	khib_seal_digests(data_digest, &notes, &key, &seal);
	memcpy(sealed, &seal, sizeof(seal));
	if (khib_put(w, trailer, trailer_size) < 0 || khib_flush(w) < 0 ||
	    (ftruncate(out, (off_t)w->at) < 0 && errno != EINVAL) || /* EINVAL: a device */
	    khib_seal_image(out, &eh) < 0) {
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
	khib_blocks_stop(run);
	khib_wipe(&key, sizeof(key));
	khib_free(&image);
	if (saved != ranges)
		free(saved);
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
	if (low_fd >= 0)
		close(low_fd);
	return status;
}
