/* Writing an image's trailer (image-write.c): khib-save's last steps. */
#ifndef KHIB_IMAGE_WRITE_H
#define KHIB_IMAGE_WRITE_H

#include "khib-core.h"

unsigned char *khib_build_trailer(const struct khib_image *image, uint64_t at,
				  const char *meta, size_t meta_size,
				  const struct khib_free_pages *f, uint64_t free_recorded,
				  size_t *size, Elf64_Ehdr *eh, struct khib_sealed_notes *notes,
				  unsigned char **seal);
int khib_seal_image(int out, Elf64_Ehdr *eh);

#endif
