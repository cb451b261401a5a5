/* The old kernel's layout, as its VMCOREINFO note exports it (vmcoreinfo.c). */
#ifndef KHIB_VMCOREINFO_H
#define KHIB_VMCOREINFO_H

#include "oldmem.h"

struct khib_kernel_layout {
	const char *who;   /* whose kernel it is, in messages: "A" or "B" */
	const char *text;
	uint64_t page_size, struct_page, mapcount, private, buddy, max_order;
	uint64_t sections, roots, per_root, section_size, section_map, section_bits, physmem_bits;
	uint64_t mem_map;
	int sparse;
	int type_byte;   /* 6.12 on: the page type is page_type's top byte */
	unsigned release;   /* major * 1000 + minor */
};

int khib_info_number(const char *text, const char *key, int64_t *value);
int khib_info_need(const struct khib_kernel_layout *l, const char *key, uint64_t *value,
		   char *why, size_t size);
int khib_read_layout(struct khib_old_memory *m, struct khib_kernel_layout *l, uint64_t kernel_code,
		     char *why, size_t size);

uint64_t khib_direct_map(struct khib_old_memory *m, const struct khib_kernel_layout *l);

#endif
