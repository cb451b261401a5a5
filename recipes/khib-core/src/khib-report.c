/*
 * khib-report: in B, leave a message in the page the original kernel (A) set aside for it.
 *
 *   khib-report ADDRESS:NONCE MESSAGE [--mem /dev/mem]
 *
 * A (khib jump, khib hibernate) fills one page of its own with "KHIBSTAT", a nonce and
 * zeros, and hands B the page's physical address and the nonce.  This writes MESSAGE
 * there, after checking that the page still holds that magic and nonce: nothing is
 * written into A's memory that has not been checked to be the page A meant.
 */
#define _GNU_SOURCE
#include "khib-image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATUS_MAGIC "KHIBSTAT"
#define NONCE_SIZE 16u
#define MESSAGE_AT (8u + NONCE_SIZE)

static int usage(void)
{
	fprintf(stderr, "usage: khib-report ADDRESS:NONCE MESSAGE [--mem FILE]\n");
	return 2;
}

int khib_report_main(int argc, char **argv)
{
	const char *mem_path = "/dev/mem", *target = NULL, *message = NULL, *nonce;
	static unsigned char page[KHIB_PAGE];
	unsigned long long address;
	size_t length;
	char *end;
	int fd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem_path = argv[++i];
		else if (!target)
			target = argv[i];
		else if (!message)
			message = argv[i];
		else
			return usage();
	}
	if (!target || !message)
		return usage();
	address = strtoull(target, &end, 0);
	nonce = end + 1;
	if (*end != ':' || strlen(nonce) != NONCE_SIZE || address % KHIB_PAGE)
		return usage();
	length = strlen(message);
	if (length > KHIB_PAGE - MESSAGE_AT - 1)
		length = KHIB_PAGE - MESSAGE_AT - 1;
	fd = open(mem_path, O_RDWR);
	if (fd < 0 || khib_mem_copy(fd, page, sizeof(page), address, 0) < 0) {
		fprintf(stderr, "khib-report: reading 0x%llx from %s: %s\n", address, mem_path,
			strerror(errno));
		return 1;
	}
	if (memcmp(page, STATUS_MAGIC, 8) || memcmp(page + 8, nonce, NONCE_SIZE)) {
		fprintf(stderr, "khib-report: 0x%llx is not the status page A set aside: "
			"nothing written\n", address);
		close(fd);
		return 1;
	}
	memset(page + MESSAGE_AT, 0, sizeof(page) - MESSAGE_AT);
	memcpy(page + MESSAGE_AT, message, length);
	if (khib_mem_copy(fd, page, sizeof(page), address, 1) < 0) {
		fprintf(stderr, "khib-report: writing 0x%llx: %s\n", address, strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	return 0;
}
