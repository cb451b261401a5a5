/*
 * Checking an image's stored blocks against its seal, and reading them back unchanged.
 *
 * The check reads every block once and keeps each one's SHA-256 (its header and stored
 * bytes): the seal covers the SHA-256 of that list.  Every later read of a block (the
 * restore's writing pass, an export) compares it with the digest the check kept before
 * its bytes are used: a disk that answers a second read differently is caught there.
 */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The digest slot of a segment's next block, grown as the check goes. */
static unsigned char *digest_slot(struct khib_image *image, size_t block)
{
	if (block >= SIZE_MAX / (4 * sizeof(*image->digests)))
		return NULL;   /* no list that long fits (a 32-bit size_t wraps first) */
	if (block >= image->ndigests) {
		size_t grown = image->ndigests ? 2 * image->ndigests : 1024;
		void *more;
		while (grown <= block)
			grown *= 2;
		more = realloc(image->digests, grown * sizeof(*image->digests));
		if (!more)
			return NULL;
		image->digests = more;
		image->ndigests = grown;
	}
	return image->digests[block];
}

/*
 * Each block of data segment ``index``: read, hashed (header and stored bytes, as they
 * are in the image), decompressed (LZ4's safe decoder: a damaged block cannot write past
 * its buffer) and handed to each() with its offset in the segment's memory.  The check
 * (recheck 0) keeps the block's digest; a recheck compares with it before each() sees a
 * byte.
 */
int khib_segment_blocks(int fd, const char *name, struct khib_image *image, size_t index,
			int recheck, khib_block_fn each, void *context)
{
	const struct khib_segment *s = &image->segments[index];
	size_t bound = (size_t)LZ4_compressBound((int)KHIB_BLOCK), block_index = s->first_block;
	unsigned char *stored = malloc(bound), *block = malloc(KHIB_BLOCK);
	uint64_t at = 0, offset = s->offset, end = s->offset + s->filesz;
	const char *what = "is damaged or cut short";
	int status = -1;

	if (!stored || !block)
		goto out;
	while (at < s->memsz) {
		size_t expected = s->memsz - at < KHIB_BLOCK ? (size_t)(s->memsz - at) : KHIB_BLOCK;
		unsigned char header[4], digest[32], *slot;
		uint32_t word, length;
		const unsigned char *memory = stored;
		struct khib_sha256 sha;
		if (end - offset < 4 || khib_pread_full(fd, header, 4, offset) < 0)
			goto damaged;
		word = (uint32_t)header[0] | (uint32_t)header[1] << 8 | (uint32_t)header[2] << 16 |
		       (uint32_t)header[3] << 24;
		length = word & ~KHIB_BLOCK_RAW;
		if (length > bound || end - offset - 4 < length ||
		    ((word & KHIB_BLOCK_RAW) && length != expected) ||
		    khib_pread_full(fd, stored, length, offset + 4) < 0)
			goto damaged;
		khib_sha256_init(&sha);
		khib_sha256_update(&sha, header, 4);
		khib_sha256_update(&sha, stored, length);
		khib_sha256_final(&sha, digest);
		if (recheck) {
			if (block_index >= image->nblocks ||
			    !khib_same_digest(digest, image->digests[block_index])) {
				what = "changed on the disk since it was checked";
				goto damaged;
			}
		} else {
			if (!(slot = digest_slot(image, block_index)))
				goto out;
			memcpy(slot, digest, sizeof(digest));
		}
		block_index++;
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
	fprintf(stderr, "khib: %s: segment %zu (0x%llx-0x%llx) %s\n", name, index,
		(unsigned long long)s->paddr, (unsigned long long)(s->paddr + s->memsz - 1), what);
out:
	free(stored);
	free(block);
	return status;
}

/*
 * Whether the blocks' digests (image->digests, blocks of them) give the image's seal: its
 * SHA-256 and, with a key, its HMAC (a keyed image needs the key, a key needs a keyed
 * image).  The number of problems found, each named on standard error.
 */
static int seal_holds(const char *name, const struct khib_image *image, size_t blocks,
		      const struct khib_key *key)
{
	struct khib_sha256 list;
	struct khib_seal expected;
	unsigned char digest[32];
	struct khib_sealed_notes notes = {
		image->phdrs, image->phdrs_size,
		image->records, image->count * sizeof(*image->records), image->meta,
		image->meta_size, image->layout, image->pairs, image->vmcoreinfo,
		image->vmcoreinfo_size,
	};
	int bad = 0;

	khib_sha256_init(&list);
	if (blocks)
		khib_sha256_update(&list, image->digests, blocks * sizeof(*image->digests));
	khib_sha256_final(&list, digest);
	khib_seal_digests(digest, &notes, key, &expected);
	if (!khib_same_digest(expected.sha256, image->seal.sha256)) {
		fprintf(stderr, "khib: %s: the image does not match its SHA-256 seal\n", name);
		bad++;
	}
	if (key->set && !khib_same_digest(expected.hmac, image->seal.hmac)) {
		fprintf(stderr, "khib: %s: the image fails its HMAC: not made with this key, or "
			"changed since\n", name);
		bad++;
	}
	khib_wipe(&expected, sizeof(expected));
	return bad;
}

static int keyed_as_told(const char *name, const struct khib_image *image,
			 const struct khib_key *key)
{
	if (image->seal.keyed == (uint64_t)key->set)
		return 1;
	fprintf(stderr, "khib: %s: %s\n", name, key->set ?
		"the image is not keyed: refused under a key" : "the image is keyed: it needs its key");
	return 0;
}

/*
 * How many blocks the image's data segments hold (*count), each segment's first one
 * noted; -1 (said) if more than a list of their digests can hold.
 */
static int count_blocks(const char *name, struct khib_image *image, size_t *count)
{
	uint64_t blocks = 0, most = SIZE_MAX / (4 * sizeof(*image->digests));

	for (size_t i = 0; i < image->count; i++) {
		struct khib_segment *s = &image->segments[i];
		if (s->kind != KHIB_DATA)
			continue;
		s->first_block = (size_t)blocks;
		blocks += s->memsz / KHIB_BLOCK + (s->memsz % KHIB_BLOCK != 0);
		if (blocks >= most) {
			fprintf(stderr, "khib: %s: too many blocks to check\n", name);
			return -1;
		}
	}
	*count = image->nblocks = (size_t)blocks;
	return 0;
}

/*
 * Read the whole image and check it against its own checksums before anything is written
 * from it: every data segment's blocks and CRC-32, and the seal.  Keeps each block's
 * digest for the reads that follow.  Returns the number of problems found (each named on
 * standard error), or -1.  The page cache is dropped afterwards, so that a later read
 * comes from the disk again.
 */
int khib_check_image(int fd, const char *name, struct khib_image *image,
		     const struct khib_key *key)
{
	size_t blocks;
	int bad = 0;

	if (count_blocks(name, image, &blocks) < 0)
		return -1;
	if (!keyed_as_told(name, image, key))
		return 1;
	for (size_t i = 0; i < image->count; i++) {
		struct khib_segment *s = &image->segments[i];
		uint32_t crc = 0;
		if (s->kind != KHIB_DATA)
			continue;
		if (khib_segment_blocks(fd, name, image, i, 0, khib_add_crc, &crc) < 0)
			return -1;
		if (crc != s->crc32) {
			fprintf(stderr, "khib: %s: segment %zu (0x%llx-0x%llx) does not match its "
				"checksum\n", name, i, (unsigned long long)s->paddr,
				(unsigned long long)(s->paddr + s->memsz - 1));
			bad++;
		}
	}
	bad += seal_holds(name, image, blocks, key);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	return bad;
}

/*
 * The digests an earlier check of the same image kept (khib_write_digests), taken in
 * place of a check: the file must hold exactly one per block and give the image's seal
 * (and HMAC), so that it is the sealed list whatever wrote the file.  Every later read of
 * a block is compared with it before its bytes are used.  The number of problems found,
 * or -1.
 */
int khib_take_digests(const char *path, const char *name, struct khib_image *image,
		      const struct khib_key *key)
{
	size_t blocks;
	struct stat st;
	int fd, bad = 1;

	if (count_blocks(name, image, &blocks) < 0)
		return -1;
	if (!keyed_as_told(name, image, key))
		return 1;
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "khib: %s: the digests of its check: %s: %s\n", name, path,
			strerror(errno));
	} else if (!S_ISREG(st.st_mode) ||
		   (uint64_t)st.st_size != (uint64_t)blocks * sizeof(*image->digests)) {
		/* before any room is taken for them: an image's claim alone takes none */
		fprintf(stderr, "khib: %s: %s does not hold one digest for each of its %zu "
			"blocks\n", name, path, blocks);
	} else if (blocks && !digest_slot(image, blocks - 1)) {
		fprintf(stderr, "khib: %s: no memory for the digests of its %zu blocks\n", name,
			blocks);
		bad = -1;
	} else if (blocks && khib_pread_full(fd, image->digests, blocks * sizeof(*image->digests),
					     0) < 0) {
		fprintf(stderr, "khib: %s: %s: %s\n", name, path, strerror(errno));
	} else {
		bad = seal_holds(name, image, blocks, key);
	}
	if (fd >= 0)
		close(fd);
	return bad;
}

/* The digests the check kept, one per block in file order, to path (new, 0600). */
int khib_write_digests(const struct khib_image *image, const char *path)
{
	size_t blocks = image->nblocks;   /* as the check counted them */
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), failed;

	failed = fd < 0 || (blocks && khib_pwrite_full(fd, image->digests,
						      blocks * sizeof(*image->digests), 0) < 0) ||
		 fsync(fd) < 0;
	if (fd >= 0 && close(fd) < 0)
		failed = 1;
	if (failed)
		fprintf(stderr, "khib: %s: %s\n", path, strerror(errno));
	return failed ? -1 : 0;
}
