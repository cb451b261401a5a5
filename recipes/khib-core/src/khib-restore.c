/*
 * khib-restore: put a khib image back into memory, or export it as a plain core.
 *
 *   khib-restore IMAGE --check [--key FILE] [--meta-out FILE] [--digests-out FILE]
 *        check the image against its seal; --meta-out: then write what it records (its
 *        meta note), as checked, to FILE; --digests-out: each block's SHA-256, as
 *        checked, to FILE
 *   khib-restore IMAGE --mem /dev/mem [--running /proc/iomem] [--within RANGES]
 *                [--key FILE] [--meta-out FILE]
 *        check the whole image first (every CRC-32, the SHA-256 seal, with --key its
 *        HMAC), that no segment lies in the running kernel's own RAM (the System RAM
 *        --running lists, less a crashkernel= reservation) and that every segment lies
 *        in the RAM --within lists; only then write every segment back (zeros for zero
 *        and free runs), each block compared with the digest the check kept before a
 *        byte of it is written, and verify.  --meta-is FILE: the image must record
 *        exactly FILE (the meta an earlier check found: no other image since);
 *        --meta-out FILE: the meta, written before memory is; --count-write: just
 *        before the first write, one more in the writes the image's first page counts.
 *        --digests FILE: the digests an earlier check wrote, in place of this
 *        check's reading of the whole image: they must give the image's seal (and
 *        HMAC), and each block is compared with its own as it is read to be written.
 *        Exit status: 0 written and verified, 1 nothing written, 3 writing began and
 *        failed (memory is changed).  --low FILE: A's 4 KiB-640 KiB goes to FILE (what
 *        the running kernel gives back to the kernel it jumps into: its
 *        /sys/kernel/kexec_jump_low), not to --mem, so the running kernel's own RAM
 *        there is not in the way.
 *   khib-restore IMAGE --mem /dev/mem --verify   only compare memory with the image
 *                                                (free runs are not compared)
 *   khib-restore IMAGE --export OUT [--key FILE] a plain core (export.c)
 */
#define _GNU_SOURCE
#include "khib-core.h"
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (2 * KHIB_WINDOW)

static int usage(void)
{
	fprintf(stderr, "usage: khib-restore IMAGE (--check | --mem FILE [--running IOMEM] "
		"[--within RANGES] [--meta-is FILE] [--count-write] [--low FILE] [--digests FILE]\n"
		"        [--verify] | --export OUT) [--key FILE] [--meta-out FILE] [--digests-out FILE]\n");
	return KHIB_EXIT_USAGE;
}

/*
 * Whether the image's segments lie in the ranges listed in path (1), outside (0); with
 * low, the running kernel's RAM below 640 KiB is no obstacle (--low writes it elsewhere).
 */
static int fits(const struct khib_image *image, const char *path, const char *name,
		int inside, int low)
{
	struct khib_range *ranges = NULL, hole = {KHIB_LOW_START, KHIB_LOW_END - KHIB_LOW_START, 0};
	size_t count = 0;
	int wrong;

	if (!path)
		return 1;
	if (khib_read_ranges(path, &ranges, &count) < 0 ||
	    (low && khib_exclude(&ranges, &count, &hole, 1) < 0)) {
		free(ranges);
		return 0;
	}
	wrong = inside ? khib_outside(image, ranges, count, name)
		       : khib_overlaps(image, ranges, count, name);
	free(ranges);
	return !wrong;
}

/* What the image records (its meta note), as checked, for the khib tools. */
static int write_meta(const struct khib_image *image, const char *path)
{
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (out < 0 || khib_pwrite_full(out, image->meta ? image->meta : "", image->meta_size, 0) < 0 ||
	    close(out) < 0) {
		fprintf(stderr, "khib-restore: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Whether the image records exactly what path holds (the meta another check found). */
static int same_meta(const struct khib_image *image, const char *path, const char *name)
{
	FILE *file = fopen(path, "rb");
	char *expected = malloc(KHIB_META_MAX + 1);
	size_t size = 0;
	int same = 0;

	if (file && expected)
		size = fread(expected, 1, KHIB_META_MAX + 1, file);
	same = file && expected && size == image->meta_size &&
	       (!size || !memcmp(expected, image->meta, size));
	if (file)
		fclose(file);
	free(expected);
	if (!same)
		fprintf(stderr, "khib: %s: not the image the first check found (another image is on "
			"the disk now)\n", name);
	return same;
}

/* One more restore that began writing, in the image's first page, on the disk first. */
static int count_write(const char *path)
{
	unsigned char word[4];
	uint32_t writes;
	int fd = open(path, O_RDWR);

	if (fd < 0 || khib_pread_full(fd, word, sizeof(word), KHIB_WRITES_AT) < 0)
		goto fail;
	writes = (uint32_t)word[0] | (uint32_t)word[1] << 8 | (uint32_t)word[2] << 16 |
		 (uint32_t)word[3] << 24;
	writes = writes < UINT32_MAX ? writes + 1 : writes;
	for (unsigned i = 0; i < 4; i++)
		word[i] = (unsigned char)(writes >> (8 * i));
	if (khib_pwrite_full(fd, word, sizeof(word), KHIB_WRITES_AT) < 0 || fsync(fd) < 0)
		goto fail;
	return close(fd);
fail:
	fprintf(stderr, "khib-restore: %s: counting the write: %s\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Where and how --mem writes: the checks before the first byte. */
struct restore_options {
	const char *mem;
	const char *low;         /* B's copy of A's 4 KiB-640 KiB: written there */
	const char *running;     /* the running kernel's RAM: no segment there */
	const char *within;      /* the RAM the image was saved from: every segment there */
	const char *meta_is;     /* the meta an earlier check found: the image must record it */
	const char *meta_out;    /* the meta, as checked, written before memory is */
	const char *digests;     /* the blocks' digests an earlier check kept: no check here */
	int count;               /* count the write in the image's first page, first */
};

/* --mem, and --low when given, opened with flags; said on standard error if not. */
static int open_phys(const char *mem_path, const char *low_path, int flags,
		     struct khib_phys *phys)
{
	const char *failed = (phys->mem = open(mem_path, flags)) < 0 ? mem_path :
			     low_path && (phys->low = open(low_path, flags)) < 0 ? low_path : NULL;

	if (failed)
		fprintf(stderr, "khib-restore: %s: %s\n", failed, strerror(errno));
	return failed ? -1 : 0;
}

static void close_phys(struct khib_phys *phys)
{
	if (phys->mem >= 0)
		close(phys->mem);
	if (phys->low >= 0)
		close(phys->low);
}

/* Check, write, verify: the exit status says what happened to memory. */
static int restore(int fd, const char *name, struct khib_image *image,
		   const struct restore_options *o, const struct khib_key *key,
		   unsigned char *buffer, double started)
{
	struct khib_phys mem = {-1, -1};
	int written = 0;
	long bad = 0;

	if ((o->digests ? khib_take_digests(o->digests, name, image, key)
			: khib_check_image(fd, name, image, key)) != 0 ||
	    !fits(image, o->running, name, 0, !!o->low) || !fits(image, o->within, name, 1, 0) || (o->meta_is && !same_meta(image, o->meta_is, name)) ||
	    (o->meta_out && write_meta(image, o->meta_out) < 0))
		return KHIB_EXIT_UNTOUCHED;
	if (open_phys(o->mem, o->low, O_RDWR, &mem) < 0 || (o->count && count_write(name) < 0)) {
		close_phys(&mem);
		return KHIB_EXIT_UNTOUCHED;
	}
	if (khib_write_back(fd, name, &mem, image, buffer, &written, &bad) < 0) {
		close_phys(&mem);
		return written ? KHIB_EXIT_PARTLY : KHIB_EXIT_UNTOUCHED;
	}
	if (bad == 0)
		bad = khib_verify(&mem, image, buffer, 1, 1);
	close_phys(&mem);
	if (bad != 0)
		return KHIB_EXIT_PARTLY;
	printf("khib-restore: %zu segments written and verified in %.1f s\n", image->count,
	       khib_seconds() - started);
	return KHIB_EXIT_WRITTEN;
}

static int compare_only(const struct restore_options *o, const struct khib_image *image,
			unsigned char *buffer, double started)
{
	struct khib_phys mem = {-1, -1};
	long bad;

	if (open_phys(o->mem, o->low, O_RDONLY, &mem) < 0) {
		close_phys(&mem);
		return 1;
	}
	bad = khib_verify(&mem, image, buffer, 0, 0);
	close_phys(&mem);
	if (bad == 0)
		printf("khib-restore: %zu segments compared and verified in %.1f s\n", image->count,
		       khib_seconds() - started);
	return bad != 0;
}

int khib_restore_main(int argc, char **argv)
{
	const char *image_path = NULL, *export = NULL, *key_path = NULL, *digests_out = NULL;
	struct restore_options o = {0};
	int verify_only = 0, check_only = 0, status = KHIB_EXIT_UNTOUCHED, fd = -1;
	struct khib_image image = {0};
	struct khib_key key = {0};
	uint16_t machine;
	unsigned char *buffer = NULL;
	double started = khib_seconds();

	for (int i = 1; i < argc; i++) {
		const char **slot = !strcmp(argv[i], "--mem") ? &o.mem :
				    !strcmp(argv[i], "--running") ? &o.running :
				    !strcmp(argv[i], "--within") ? &o.within :
				    !strcmp(argv[i], "--low") ? &o.low :
				    !strcmp(argv[i], "--meta-is") ? &o.meta_is :
				    !strcmp(argv[i], "--export") ? &export :
				    !strcmp(argv[i], "--key") ? &key_path :
				    !strcmp(argv[i], "--meta-out") ? &o.meta_out :
				    !strcmp(argv[i], "--digests") ? &o.digests :
				    !strcmp(argv[i], "--digests-out") ? &digests_out : NULL;
		if (slot && i + 1 < argc)
			*slot = argv[++i];
		else if (!strcmp(argv[i], "--verify"))
			verify_only = 1;
		else if (!strcmp(argv[i], "--check"))
			check_only = 1;
		else if (!strcmp(argv[i], "--count-write"))
			o.count = 1;
		else if (argv[i][0] != '-' && !image_path)
			image_path = argv[i];
		else
			return usage();
	}
	if (!image_path || !!o.mem + !!export + check_only != 1 || (verify_only && !o.mem) ||
	    (digests_out && !check_only) || (o.digests && (!o.mem || verify_only)))
		return usage();
	buffer = malloc(CHUNK);
	if (!buffer || (key_path && khib_read_key(key_path, &key) < 0))
		goto out;
	fd = open(image_path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "khib-restore: %s: %s\n", image_path, strerror(errno));
		goto out;
	}
	if (khib_read_image(fd, image_path, &image, &machine) < 0) {
		if (o.mem && !verify_only)
			fprintf(stderr, "khib-restore: %s: nothing written\n", image_path);
		goto out;
	}
	if (check_only) {
		status = khib_check_image(fd, image_path, &image, &key) != 0;
		if (!status)
			printf("khib-restore: %s: %zu segments checked, the seal holds%s\n", image_path,
			       image.count, key.set ? " (keyed)" : "");
	} else if (export) {
		status = khib_check_image(fd, image_path, &image, &key) != 0 ||
			 khib_export_core(fd, image_path, &image, export, machine, buffer) < 0;
	} else if (verify_only) {
		status = compare_only(&o, &image, buffer, started);
	} else {
		status = restore(fd, image_path, &image, &o, &key, buffer, started);
		if (status == KHIB_EXIT_UNTOUCHED)
			fprintf(stderr, "khib-restore: %s: nothing written\n", image_path);
	}
	if ((check_only || export) && status == 0 && ((o.meta_out && write_meta(&image, o.meta_out) < 0) ||
	    (digests_out && khib_write_digests(&image, digests_out) < 0)))
		status = KHIB_EXIT_UNTOUCHED;
out:   /* every way out frees what it took: nothing for LeakSanitizer to report */
	khib_wipe(&key, sizeof(key));
	khib_free(&image);
	free(buffer);
	if (fd >= 0)
		close(fd);
	return status;
}
