/* SHA-256 (FIPS 180-4) and HMAC-SHA256: the digests that seal a khib image. */
#include "khib-core.h"

#include <errno.h>
#include <string.h>
#if (defined(__x86_64__) || defined(__i386__)) && !defined(KHIB_PORTABLE)
#define KHIB_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

/* One 64-byte block; the working variables named, not shifted through an array (3x). */
static void block(struct khib_sha256 *ctx, const unsigned char *p)
{
	uint32_t w[64];
	uint32_t a = ctx->state[0], b = ctx->state[1], c = ctx->state[2], d = ctx->state[3];
	uint32_t e = ctx->state[4], f = ctx->state[5], g = ctx->state[6], h = ctx->state[7];

	for (unsigned i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (unsigned i = 16; i < 64; i++) {
		uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	for (unsigned i = 0; i < 64; i++) {
		uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
			      K[i] + w[i];
		uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	ctx->state[0] += a;
	ctx->state[1] += b;
	ctx->state[2] += c;
	ctx->state[3] += d;
	ctx->state[4] += e;
	ctx->state[5] += f;
	ctx->state[6] += g;
	ctx->state[7] += h;
}

void khib_sha256_init(struct khib_sha256 *ctx)
{
	static const uint32_t initial[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};
	memcpy(ctx->state, initial, sizeof(initial));
	ctx->length = 0;
	ctx->used = 0;
}

#ifdef KHIB_SHA_NI
/*
 * The same compression with the x86 SHA extensions (Intel SHA-NI; AMD Zen, Intel since
 * Goldmont and Ice Lake): each sha256rnds2 does two rounds, sha256msg1/msg2 extend the
 * message schedule. Eight times the speed of the plain C above, which matters where every
 * stored byte is sealed and checked. Chosen at run time by CPUID (leaf 7, EBX bit 29).
 */
__attribute__((target("sha,sse4.1")))
static void blocks_sha_ni(uint32_t state[8], const unsigned char *p, size_t count)
{
	const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bll, 0x0405060700010203ll);
	__m128i dcba = _mm_loadu_si128((const __m128i *)(const void *)&state[0]);
	__m128i efgh = _mm_loadu_si128((const __m128i *)(const void *)&state[4]);
	__m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
	__m128i abef, cdgh;

	efgh = _mm_shuffle_epi32(efgh, 0x1B);
	abef = _mm_alignr_epi8(cdab, efgh, 8);
	cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
	for (; count; count--, p += 64) {
		__m128i saved_abef = abef, saved_cdgh = cdgh, m[4];
		for (int i = 0; i < 4; i++)
			m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)
								(p + 16 * i)), swap);
		for (int g = 0; g < 16; g++) {   /* four rounds a group */
			__m128i k = _mm_loadu_si128((const __m128i *)(const void *)&K[4 * g]);
			__m128i message = _mm_add_epi32(m[g & 3], k);
			cdgh = _mm_sha256rnds2_epu32(cdgh, abef, message);
			if (g >= 3 && g <= 14) {  /* the next group's four words */
				__m128i later = _mm_alignr_epi8(m[g & 3], m[(g - 1) & 3], 4);
				m[(g + 1) & 3] = _mm_sha256msg2_epu32(
					_mm_add_epi32(m[(g + 1) & 3], later), m[g & 3]);
			}
			abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(message, 0x0E));
			if (g >= 1 && g <= 12)
				m[(g - 1) & 3] = _mm_sha256msg1_epu32(m[(g - 1) & 3], m[g & 3]);
		}
		abef = _mm_add_epi32(abef, saved_abef);
		cdgh = _mm_add_epi32(cdgh, saved_cdgh);
	}
	{
		__m128i feba = _mm_shuffle_epi32(abef, 0x1B);
		__m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
		_mm_storeu_si128((__m128i *)(void *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
		_mm_storeu_si128((__m128i *)(void *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
	}
}

static int has_sha_ni(void)
{
	static int known = -1;
	unsigned a, b, c, d;

	if (known < 0)
		known = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b >> 29) & 1u;
	return known;
}
#endif

/* What the CPU offers, found before any thread hashes (a check made lazily would be a
 * data race between threads). */
void khib_sha256_ready(void)
{
#ifdef KHIB_SHA_NI
	(void)has_sha_ni();
#endif
}

/* count 64-byte blocks, with the SHA extensions where the CPU has them. */
static void blocks(struct khib_sha256 *ctx, const unsigned char *p, size_t count)
{
#ifdef KHIB_SHA_NI
	if (has_sha_ni()) {
		blocks_sha_ni(ctx->state, p, count);
		return;
	}
#endif
	for (; count; count--, p += 64)
		block(ctx, p);
}

void khib_sha256_update(struct khib_sha256 *ctx, const void *data, size_t size)
{
	const unsigned char *p = data;

	if (!size)
		return;
	ctx->length += size;
	if (ctx->used) {
		size_t take = 64 - ctx->used < size ? 64 - ctx->used : size;
		memcpy(ctx->buffer + ctx->used, p, take);
		ctx->used += take;
		p += take;
		size -= take;
		if (ctx->used < 64)
			return;
		block(ctx, ctx->buffer);
		ctx->used = 0;
	}
	blocks(ctx, p, size / 64);
	p += size / 64 * 64;
	size %= 64;
	memcpy(ctx->buffer, p, size);
	ctx->used = size;
}

void khib_sha256_final(struct khib_sha256 *ctx, unsigned char digest[32])
{
	uint64_t bits = ctx->length * 8;
	unsigned char tail[8];

	khib_sha256_update(ctx, "\x80", 1);
	while (ctx->used != 56)
		khib_sha256_update(ctx, "", 1);
	for (unsigned i = 0; i < 8; i++)
		tail[i] = (unsigned char)(bits >> (56 - 8 * i));
	khib_sha256_update(ctx, tail, 8);
	for (unsigned i = 0; i < 8; i++) {
		digest[4 * i] = (unsigned char)(ctx->state[i] >> 24);
		digest[4 * i + 1] = (unsigned char)(ctx->state[i] >> 16);
		digest[4 * i + 2] = (unsigned char)(ctx->state[i] >> 8);
		digest[4 * i + 3] = (unsigned char)ctx->state[i];
	}
}

/* HMAC-SHA256 (RFC 2104): the inner hash is fed like a plain SHA-256 between these two. */
static void hmac_pad(struct khib_sha256 *ctx, const struct khib_key *key, unsigned char with)
{
	unsigned char pad[64];

	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] = key->block[i] ^ with;
	khib_sha256_init(ctx);
	khib_sha256_update(ctx, pad, sizeof(pad));
	khib_wipe(pad, sizeof(pad));
}

void khib_hmac_init(struct khib_sha256 *ctx, const struct khib_key *key)
{
	hmac_pad(ctx, key, 0x36);
}

void khib_hmac_final(struct khib_sha256 *ctx, const struct khib_key *key, unsigned char mac[32])
{
	unsigned char inner[32];

	khib_sha256_final(ctx, inner);
	hmac_pad(ctx, key, 0x5c);
	khib_sha256_update(ctx, inner, sizeof(inner));
	khib_sha256_final(ctx, mac);
}

/* The key block HMAC uses: the key's bytes, padded, or their SHA-256 when longer. */
void khib_key_from(const unsigned char *bytes, size_t size, struct khib_key *key)
{
	*key = (struct khib_key){0};
	if (size > sizeof(key->block)) {
		struct khib_sha256 ctx;
		khib_sha256_init(&ctx);
		khib_sha256_update(&ctx, bytes, size);
		khib_sha256_final(&ctx, key->block);
		khib_wipe(&ctx, sizeof(ctx));
	} else {
		memcpy(key->block, bytes, size);
	}
	key->set = 1;
}

/* A key file: 16 to 4096 bytes, taken as they are (hashed first when over 64). */
int khib_read_key(const char *path, struct khib_key *key)
{
	unsigned char bytes[4097];
	FILE *file = fopen(path, "rb");
	size_t size;

	*key = (struct khib_key){0};
	if (!file) {
		fprintf(stderr, "khib: %s: %s\n", path, strerror(errno));
		return -1;
	}
	setvbuf(file, NULL, _IONBF, 0);   /* no stdio buffer left holding the key */
	size = fread(bytes, 1, sizeof(bytes), file);
	fclose(file);
	if (size < KHIB_KEY_MIN || size > 4096) {
		fprintf(stderr, "khib: %s: a key is %u to 4096 bytes, this file holds %s%zu\n",
			path, KHIB_KEY_MIN, size > 4096 ? "more than " : "",
			size > 4096 ? (size_t)4096 : size);
		khib_wipe(bytes, sizeof(bytes));
		return -1;
	}
	khib_key_from(bytes, size, key);
	khib_wipe(bytes, sizeof(bytes));
	return 0;
}
