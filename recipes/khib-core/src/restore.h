/* khib-restore's parts (khib-restore.c, export.c): where decompressed blocks go. */
#ifndef KHIB_RESTORE_H
#define KHIB_RESTORE_H

#include "khib-core.h"

/* Memory (a physical address) or a file (an offset). */
struct khib_destination {
	int fd;                           /* a file */
	const struct khib_phys *phys;     /* memory */
	uint64_t base;
	int memory;
	int *written;     /* set once a byte of memory may have changed */
};

int put_into(void *context, const unsigned char *data, size_t size, uint64_t at);
int khib_write_back(int image_fd, const char *name, const struct khib_phys *mem,
		    struct khib_image *image, unsigned char *buffer, int *written, long *bad);
long khib_verify(const struct khib_phys *mem, const struct khib_image *image,
		 unsigned char *buffer, int free, int data_only);
int khib_export_core(int image_fd, const char *name, struct khib_image *image,
		     const char *path, uint16_t machine, unsigned char *buffer);

#endif
