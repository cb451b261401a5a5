/*
 * khib-save's blocks: a batch of KHIB_BATCH, each LZ4-compressed (when that makes it
 * smaller) and hashed by whichever thread takes it, while the caller fills the next
 * batch; then put into the image in order.  Each block's bytes depend on its memory
 * alone, so the image is byte for byte the same with one thread (B, whose CPU is often
 * alone) or several (the host).
 */
#define _GNU_SOURCE
#include "save-pages.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The threads besides the caller's, and the batch they are packing. */
struct khib_workers {
	pthread_mutex_t lock;
	pthread_cond_t go, done;
	struct khib_pending *posted;      /* the batch, or NULL */
	size_t count, next, packed;       /* its blocks: in all, the next to take, packed */
	int stop;
	pthread_t thread[KHIB_THREADS_MAX];
};

/* One block: LZ4 (lz4 -1's speed) when that is smaller, else its bytes as they are. */
static void pack(struct khib_pending *b)
{
	int packed = LZ4_compress_default((const char *)b->block, (char *)b->packed,
					  (int)b->used, (int)sizeof(b->packed));
	int raw = packed <= 0 || (size_t)packed >= b->used;
	uint32_t word;
	struct khib_sha256 sha;

	b->raw = raw;
	b->length = raw ? (uint32_t)b->used : (uint32_t)packed;
	word = b->length | (raw ? KHIB_BLOCK_RAW : 0);
	for (unsigned i = 0; i < 4; i++)
		b->header[i] = (unsigned char)(word >> (8 * i));
	khib_sha256_init(&sha);
	khib_sha256_update(&sha, b->header, 4);
	khib_sha256_update(&sha, raw ? b->block : b->packed, b->length);
	khib_sha256_final(&sha, b->digest);
}

/* Blocks of the posted batch, one at a time, until none is left; the lock held. */
static void take_blocks(struct khib_workers *k)
{
	while (k->posted && k->next < k->count) {
		struct khib_pending *b = &k->posted[k->next++];
		pthread_mutex_unlock(&k->lock);
		pack(b);
		pthread_mutex_lock(&k->lock);
		if (++k->packed == k->count)
			pthread_cond_broadcast(&k->done);
	}
}

static void *worker(void *context)
{
	struct khib_workers *k = context;

	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		take_blocks(k);
		if (!k->stop)
			pthread_cond_wait(&k->go, &k->lock);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

/* threads in all (the caller's among them, at most KHIB_THREADS_MAX); -1 if none start. */
int khib_blocks_start(struct khib_data_run *run, unsigned threads)
{
	struct khib_workers *k;
	unsigned made = 0;
	int failed;

	run->segment = SIZE_MAX;
	run->count = 0;
	run->blocks = run->batch[0];
	run->blocks[0].used = 0;
	run->flying = NULL;
	run->threads = 1;
	run->batch_size = 1;   /* one block at a time: no memory held for a batch */
	run->workers = NULL;
	threads = threads < 1 ? 1 : threads > KHIB_THREADS_MAX ? KHIB_THREADS_MAX : threads;
	if (threads == 1)
		return 0;
	khib_sha256_ready();   /* before any thread hashes */
	khib_crc32_ready();
	k = calloc(1, sizeof(*k));
	if (!k)
		return -1;
	if ((failed = pthread_mutex_init(&k->lock, NULL)) != 0)
		goto no_lock;
	if ((failed = pthread_cond_init(&k->go, NULL)) != 0)
		goto no_go;
	if ((failed = pthread_cond_init(&k->done, NULL)) != 0)
		goto no_done;
	run->workers = k;
	run->batch_size = KHIB_BATCH;
	for (; made < threads - 1; made++)
		if (pthread_create(&k->thread[made], NULL, worker, k))
			break;
	run->threads = made + 1;   /* as many as started: the image is the same */
	return 0;
no_done:
	pthread_cond_destroy(&k->go);
no_go:
	pthread_mutex_destroy(&k->lock);
no_lock:
	free(k);
	errno = failed;   /* the pthread calls return their error instead of setting it */
	return -1;
}

void khib_blocks_stop(struct khib_data_run *run)
{
	struct khib_workers *k = run->workers;

	if (!k)
		return;
	pthread_mutex_lock(&k->lock);
	k->stop = 1;
	pthread_cond_broadcast(&k->go);
	pthread_mutex_unlock(&k->lock);
	for (unsigned i = 0; i + 1 < run->threads; i++)
		pthread_join(k->thread[i], NULL);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->go);
	pthread_cond_destroy(&k->done);
	free(k);
	run->workers = NULL;
	run->threads = 1;
}

/* The batch the threads are packing, packed: the caller takes blocks too, then waits. */
static void land(struct khib_workers *k)
{
	pthread_mutex_lock(&k->lock);
	take_blocks(k);
	while (k->packed < k->count)
		pthread_cond_wait(&k->done, &k->lock);
	k->posted = NULL;
	pthread_mutex_unlock(&k->lock);
}

/* Packed blocks into the image in order, each segment's offset and stored size known
 * as its blocks go in. */
static int emit(struct khib_writer *w, const struct khib_pending *blocks, size_t count,
		struct khib_image *image)
{
	for (size_t i = 0; i < count; i++) {
		const struct khib_pending *b = &blocks[i];
		struct khib_segment *s = &image->segments[b->segment];
		if (b->first)
			s->offset = khib_position(w);
		khib_sha256_update(&w->list, b->digest, sizeof(b->digest));
		if (khib_put(w, b->header, 4) < 0 ||
		    khib_put(w, b->raw ? b->block : b->packed, b->length) < 0)
			return -1;
		s->filesz = khib_position(w) - s->offset;
	}
	return 0;
}

/*
 * The batch being filled goes to the threads (the one they were packing lands in the
 * image first); with no thread, it is packed and put into the image here.  last: it is
 * the last batch, packed and put in before this returns.
 */
static int send(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image,
		int last)
{
	struct khib_workers *k = run->workers;

	if (!k) {
		for (size_t i = 0; i < run->count; i++)
			pack(&run->blocks[i]);
		if (emit(w, run->blocks, run->count, image) < 0)
			return -1;
	} else {
		if (run->flying) {
			land(k);
			if (emit(w, run->flying, run->flying_count, image) < 0)
				return -1;
		}
		pthread_mutex_lock(&k->lock);
		k->posted = run->blocks;
		k->count = run->count;
		k->next = k->packed = 0;
		pthread_cond_broadcast(&k->go);
		pthread_mutex_unlock(&k->lock);
		run->flying = run->blocks;
		run->flying_count = run->count;
		run->blocks = run->blocks == run->batch[0] ? run->batch[1] : run->batch[0];
		if (last) {
			land(k);
			if (emit(w, run->flying, run->flying_count, image) < 0)
				return -1;
			run->flying = NULL;
		}
	}
	run->count = 0;
	run->blocks[0].used = 0;
	return 0;
}

/* Every block saved so far into the image (the end of the pass). */
int khib_blocks_out(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image)
{
	return send(w, run, image, 1);
}

/* The block being filled is whole (or its run ended): the next one, the batch off if full. */
int khib_block_done(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image)
{
	if (!run->blocks[run->count].used)
		return 0;
	if (++run->count == run->batch_size && send(w, run, image, 0) < 0)
		return -1;
	run->blocks[run->count].used = 0;
	return 0;
}
