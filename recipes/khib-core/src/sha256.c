/* SHA-256 (FIPS 180-4) and HMAC-SHA256: the digests that seal a khib image. */
#include "khib-image.h"

#include <errno.h>
#include <string.h>

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

static void block(struct khib_sha256 *ctx, const unsigned char *p)
{
	uint32_t w[64], s[8];

	for (unsigned i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (unsigned i = 16; i < 64; i++) {
		uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	memcpy(s, ctx->state, sizeof(s));
	for (unsigned i = 0; i < 64; i++) {
		uint32_t t1 = s[7] + (rotr(s[4], 6) ^ rotr(s[4], 11) ^ rotr(s[4], 25)) +
			      ((s[4] & s[5]) ^ (~s[4] & s[6])) + K[i] + w[i];
		uint32_t t2 = (rotr(s[0], 2) ^ rotr(s[0], 13) ^ rotr(s[0], 22)) +
			      ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
		memmove(s + 1, s, 7 * sizeof(s[0]));
		s[4] += t1;
		s[0] = t1 + t2;
	}
	for (unsigned i = 0; i < 8; i++)
		ctx->state[i] += s[i];
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

void khib_sha256_update(struct khib_sha256 *ctx, const void *data, size_t size)
{
	const unsigned char *p = data;

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
	for (; size >= 64; p += 64, size -= 64)
		block(ctx, p);
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
	size = fread(bytes, 1, sizeof(bytes), file);
	fclose(file);
	if (size < 16 || size > 4096) {
		fprintf(stderr, "khib: %s: a key is 16 to 4096 bytes, this file holds %s%zu\n",
			path, size > 4096 ? "more than " : "", size > 4096 ? (size_t)4096 : size);
		return -1;
	}
	if (size > sizeof(key->block)) {
		struct khib_sha256 ctx;
		khib_sha256_init(&ctx);
		khib_sha256_update(&ctx, bytes, size);
		khib_sha256_final(&ctx, key->block);
	} else {
		memcpy(key->block, bytes, size);
	}
	key->set = 1;
	return 0;
}
