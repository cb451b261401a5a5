/* The seal: the digests over an image's stored data and notes. */
#include "khib-core.h"

#include <string.h>

/*
 * The seal's digests: SHA-256 (and with a key, HMAC-SHA256) of the stored bytes' own
 * SHA-256 followed by the notes the seal covers.
 */
void khib_seal_digests(const unsigned char data_digest[32], const struct khib_sealed_notes *n,
		       const struct khib_key *key, struct khib_seal *seal)
{
	struct khib_sha256 plain, keyed;
	const struct { const void *at; size_t size; } parts[] = {
		{data_digest, 32}, {n->phdrs, n->phdrs_size}, {n->records, n->records_size},
		{n->meta, n->meta_size},
		{&n->layout, sizeof(n->layout)},
		{n->pairs, (size_t)n->layout.npairs * sizeof(struct khib_pair)},
		{n->vmcoreinfo, n->vmcoreinfo_size},
	};

	khib_sha256_init(&plain);
	if (key->set)
		khib_hmac_init(&keyed, key);
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		khib_sha256_update(&plain, parts[i].at, parts[i].size);
		if (key->set)
			khib_sha256_update(&keyed, parts[i].at, parts[i].size);
	}
	khib_sha256_final(&plain, seal->sha256);
	seal->keyed = key->set ? 1 : 0;
	memset(seal->hmac, 0, sizeof(seal->hmac));
	if (key->set)
		khib_hmac_final(&keyed, key, seal->hmac);
	khib_wipe(&keyed, sizeof(keyed));
}

/* Constant-time comparison of two digests. */
int khib_same_digest(const unsigned char *a, const unsigned char *b)
{
	unsigned char differ = 0;

	for (size_t i = 0; i < 32; i++)
		differ |= (unsigned char)(a[i] ^ b[i]);
	return differ == 0;
}

/* Zero a secret where the compiler cannot leave the stores out. */
void khib_wipe(void *data, size_t size)
{
	volatile unsigned char *at = data;

	while (size--)
		*at++ = 0;
}
