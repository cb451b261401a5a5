/* CRC-32 and the zero test: the cheap checks of every page. */
#include "khib-core.h"

#include <string.h>
#if (defined(__x86_64__) || defined(__i386__)) && !defined(KHIB_PORTABLE)
#define KHIB_PCLMUL 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* CRC-32 (IEEE, as zlib's), eight bytes a step ("slicing by 8"): four times the speed of a
 * byte a step.  The CRC of CPUs without PCLMULQDQ (QEMU's TCG models, where B runs). */
uint32_t khib_crc32_table(uint32_t crc, const void *data, size_t size)
{
	static uint32_t table[8][256];
	const unsigned char *bytes = data;

	if (!table[0][1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[0][i] = c;
		}
		for (uint32_t i = 0; i < 256; i++)
			for (int t = 1; t < 8; t++)
				table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
	}
	crc = ~crc;
	for (; size >= 8; size -= 8, bytes += 8) {
		uint32_t low = crc ^ ((uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 |
				      (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24);
		uint32_t high = (uint32_t)bytes[4] | (uint32_t)bytes[5] << 8 |
				(uint32_t)bytes[6] << 16 | (uint32_t)bytes[7] << 24;
		crc = table[7][low & 0xff] ^ table[6][(low >> 8) & 0xff] ^
		      table[5][(low >> 16) & 0xff] ^ table[4][low >> 24] ^
		      table[3][high & 0xff] ^ table[2][(high >> 8) & 0xff] ^
		      table[1][(high >> 16) & 0xff] ^ table[0][high >> 24];
	}
	while (size--)
		crc = table[0][(crc ^ *bytes++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#ifdef KHIB_PCLMUL
/*
 * The same CRC by carry-less multiplication (Intel, "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ", 2009; the bit-reflected constants as zlib's Chromium
 * copy has them): four 128-bit lanes folded 64 bytes a step, then folded into one,
 * reduced to 64 and 32 bits (Barrett).  Takes the inverted CRC, a multiple of 16 bytes,
 * at least 64; six times the tables' speed here.
 */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crc32_folded(uint32_t crc, const unsigned char *p, size_t size)
{
	const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596ll, 0x0154442bd4ll);
	const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009ell, 0x01751997d0ll);
	const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124ll);
	const __m128i poly = _mm_set_epi64x(0x01f7011641ll, 0x01db710641ll);
	const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
	__m128i x[4], t;

	for (int i = 0; i < 4; i++)
		x[i] = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
	x[0] = _mm_xor_si128(x[0], _mm_cvtsi32_si128((int)crc));
	for (p += 64, size -= 64; size >= 64; p += 64, size -= 64)
		for (int i = 0; i < 4; i++) {
			__m128i next = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
			t = _mm_clmulepi64_si128(x[i], k1k2, 0x00);
			x[i] = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x[i], k1k2, 0x11), t),
					     next);
		}
	for (int i = 1; i < 4; i++) {   /* four lanes into one */
		t = _mm_clmulepi64_si128(x[0], k3k4, 0x00);
		x[0] = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x[0], k3k4, 0x11), x[i]), t);
	}
	for (; size >= 16; p += 16, size -= 16) {
		t = _mm_clmulepi64_si128(x[0], k3k4, 0x00);
		x[0] = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x[0], k3k4, 0x11),
						   _mm_loadu_si128((const __m128i *)(const void *)p)), t);
	}
	t = _mm_clmulepi64_si128(x[0], k3k4, 0x10);   /* 128 bits to 64 */
	x[0] = _mm_xor_si128(_mm_srli_si128(x[0], 8), t);
	t = _mm_srli_si128(x[0], 4);
	x[0] = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x[0], low32), k5, 0x00), t);
	t = _mm_clmulepi64_si128(_mm_and_si128(x[0], low32), poly, 0x10);   /* Barrett */
	t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), poly, 0x00);
	return (uint32_t)_mm_extract_epi32(_mm_xor_si128(x[0], t), 1);
}

static int has_pclmul(void)
{
	static int known = -1;
	unsigned a, b, c, d;

	if (known < 0)
		known = __get_cpuid(1, &a, &b, &c, &d) && (c >> 1) & 1u && (c >> 19) & 1u;
	return known;
}
#endif

/* A block's or a window's bytes added to the CRC-32 at context (a khib_block_fn and a
 * khib_mem_fn: the check and the verification sum alike). */
int khib_add_crc(void *context, const unsigned char *data, size_t size, uint64_t at)
{
	(void)at;
	*(uint32_t *)context = khib_crc32(*(uint32_t *)context, data, size);
	return 0;
}

/* The tables filled and what the CPU offers found, before any thread computes a CRC-32
 * (done lazily, they would be a data race between threads). */
void khib_crc32_ready(void)
{
	(void)khib_crc32_table(0, NULL, 0);
#ifdef KHIB_PCLMUL
	(void)has_pclmul();
#endif
}

/* CRC-32: by PCLMULQDQ where the CPU has it (and SSE4.1), else by the tables (always
 * when built with -DKHIB_PORTABLE: bench/save.py measures that path). */
uint32_t khib_crc32(uint32_t crc, const void *data, size_t size)
{
#ifdef KHIB_PCLMUL
	if (size >= 64 && has_pclmul()) {
		size_t folded = size & ~(size_t)15;
		crc = ~crc32_folded(~crc, data, folded);
		return size == folded ? crc :
		       khib_crc32_table(crc, (const unsigned char *)data + folded, size - folded);
	}
#endif
	return khib_crc32_table(crc, data, size);
}

/* Whether a run of bytes is all zero: 64 bytes a step (words or'ed), the rest a byte. */
int khib_is_zero(const unsigned char *page, size_t size)
{
	size_t i = 0;

	for (; i + 64 <= size; i += 64) {
		uint64_t word[8], any = 0;
		memcpy(word, page + i, sizeof(word));
		for (int k = 0; k < 8; k++)
			any |= word[k];
		if (any)
			return 0;
	}
	for (; i < size; i++)
		if (page[i])
			return 0;
	return 1;
}
