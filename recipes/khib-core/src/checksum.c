/* CRC-32 and the zero test: the cheap checks of every page. */
#include "khib-core.h"

#include <string.h>

/* CRC-32 (IEEE, as zlib's), eight bytes a step ("slicing by 8"): four times the speed of a
 * byte a step, which matters where every stored byte is checked three times. */
uint32_t khib_crc32(uint32_t crc, const void *data, size_t size)
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

/* Whether a run of bytes is all zero: a word at a time. */
int khib_is_zero(const unsigned char *page, size_t size)
{
	size_t i = 0;

	for (; i + sizeof(uint64_t) <= size; i += sizeof(uint64_t)) {
		uint64_t word;
		memcpy(&word, page + i, sizeof(word));
		if (word)
			return 0;
	}
	for (; i < size; i++)
		if (page[i])
			return 0;
	return 1;
}

