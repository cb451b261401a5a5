/*
 * khib-save's blocks: a batch of KHIB_BATCH, each LZ4-compressed (when that makes it
 * smaller) and hashed by one of the threads, then put into the image in order.  Each
 * block's bytes depend on its memory alone, so the image is byte for byte the same with
 * one thread (B, whose CPU is often alone) or several (the host).
 */
#define _GNU_SOURCE
#include "save-pages.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The threads besides the caller's, and the batch they are on. */
struct khib_workers {
	pthread_mutex_t lock;
	pthread_cond_t go, done;
	unsigned long batch;      /* one more for each batch handed out */
	unsigned finished;        /* threads done with the current batch */
	int stop;
	struct khib_data_run *run;
	pthread_t thread[KHIB_THREADS_MAX];
	unsigned started;
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

/* Thread share's blocks of the batch: share, share + threads, ... */
static void pack_share(struct khib_data_run *run, unsigned share)
{
	for (size_t i = share; i < run->count; i += run->threads)
		pack(&run->blocks[i]);
}

static void *worker(void *context)
{
	struct khib_workers *k = context;
	unsigned long seen = 0;
	unsigned share;

	pthread_mutex_lock(&k->lock);
	share = ++k->started;   /* 1, 2, ...: the caller's share is 0 */
	for (;;) {
		while (k->batch == seen && !k->stop)
			pthread_cond_wait(&k->go, &k->lock);
		if (k->stop)
			break;
		seen = k->batch;
		pthread_mutex_unlock(&k->lock);
		pack_share(k->run, share);
		pthread_mutex_lock(&k->lock);
		if (++k->finished == k->run->threads - 1)
			pthread_cond_signal(&k->done);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

/* threads in all (the caller's among them, at most KHIB_THREADS_MAX); -1 if none start. */
int khib_blocks_start(struct khib_data_run *run, unsigned threads)
{
	struct khib_workers *k;
	unsigned made = 0;

	run->segment = SIZE_MAX;
	run->count = 0;
	run->blocks[0].used = 0;
	run->threads = 1;
	run->workers = NULL;
	threads = threads < 1 ? 1 : threads > KHIB_THREADS_MAX ? KHIB_THREADS_MAX : threads;
	if (threads == 1)
		return 0;
	k = calloc(1, sizeof(*k));
	if (!k || pthread_mutex_init(&k->lock, NULL) || pthread_cond_init(&k->go, NULL) ||
	    pthread_cond_init(&k->done, NULL)) {
		free(k);
		return -1;
	}
	k->run = run;
	run->workers = k;
	for (; made < threads - 1; made++)
		if (pthread_create(&k->thread[made], NULL, worker, k))
			break;
	run->threads = made + 1;   /* as many as started: the image is the same */
	return 0;
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

/*
 * The batch's blocks packed (by every thread) and put into the image in order, each
 * segment's offset and stored size known as its blocks go in.
 */
int khib_blocks_out(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image)
{
	struct khib_workers *k = run->workers;

	if (k && run->count > 1) {
		pthread_mutex_lock(&k->lock);
		k->finished = 0;
		k->batch++;
		pthread_cond_broadcast(&k->go);
		pthread_mutex_unlock(&k->lock);
		pack_share(run, 0);
		pthread_mutex_lock(&k->lock);
		while (k->finished < run->threads - 1)
			pthread_cond_wait(&k->done, &k->lock);
		pthread_mutex_unlock(&k->lock);
	} else {
		for (size_t i = 0; i < run->count; i++)
			pack(&run->blocks[i]);
	}
	for (size_t i = 0; i < run->count; i++) {
		struct khib_pending *b = &run->blocks[i];
		struct khib_segment *s = &image->segments[b->segment];
		if (b->first)
			s->offset = khib_position(w);
		khib_sha256_update(&w->list, b->digest, sizeof(b->digest));
		if (khib_put(w, b->header, 4) < 0 ||
		    khib_put(w, b->raw ? b->block : b->packed, b->length) < 0)
			return -1;
		s->filesz = khib_position(w) - s->offset;
	}
	run->blocks[0].used = 0;
	run->count = 0;
	return 0;
}

/* The block being filled is whole (or its run ended): the next one, the batch out if full. */
int khib_block_done(struct khib_writer *w, struct khib_data_run *run, struct khib_image *image)
{
	if (!run->blocks[run->count].used)
		return 0;
	if (++run->count == KHIB_BATCH && khib_blocks_out(w, run, image) < 0)
		return -1;
	run->blocks[run->count].used = 0;
	return 0;
}
