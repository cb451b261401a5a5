/*
 * khib-report: in B, use the page the original kernel (A) set aside for it.
 *
 *   khib-report ADDRESS:NONCE MESSAGE [--mem /dev/mem]
 *   khib-report ADDRESS:NONCE --take-key FILE [--mem /dev/mem]
 *
 * A (khib jump, khib hibernate) fills one page of its own with KHIB_STATUS_MAGIC, a nonce
 * and zeros, and hands B the page's physical address and the nonce.  The first form
 * leaves MESSAGE there.  The second takes the key A put in the page (khib hibernate
 * --key): it writes the key to FILE (a new file, 0600, in B's own memory) and zeroes it
 * in A's page, so that the image B then saves of A holds no copy of it.  Both check the
 * magic and the nonce first: nothing is written into A's memory that has not been
 * checked to be the page A meant.
 */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAGIC_SIZE (sizeof(KHIB_STATUS_MAGIC) - 1u)

static int usage(void)
{
	fprintf(stderr, "usage: khib-report ADDRESS:NONCE (MESSAGE | --take-key FILE) "
		"[--mem FILE]\n");
	return 2;
}

/* The key in A's page to FILE, and zeros in its place; -1 and a message. */
static int take_key(unsigned char *page, void *context)
{
	const char *path = context;
	uint32_t length;
	int out;

	memcpy(&length, page + KHIB_STATUS_KEY_AT, sizeof(length));
	if (length < KHIB_KEY_MIN || length > KHIB_KEY_MAX) {
		fprintf(stderr, "khib-report: A left no key in its status page\n");
		return -1;
	}
	out = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (out < 0 || khib_pwrite_full(out, page + KHIB_STATUS_KEY_AT + 4, length, 0) < 0 ||
	    close(out) < 0) {
		fprintf(stderr, "khib-report: %s: %s\n", path, strerror(errno));
		return -1;
	}
	khib_wipe(page + KHIB_STATUS_KEY_AT, KHIB_PAGE - KHIB_STATUS_KEY_AT);
	return 0;
}

/*
 * Read A's status page, check its magic and nonce, let ``change`` change it and write it
 * back: nothing goes into A's memory that is not the page A meant.  0, or -1 and a message.
 */
int khib_status_update(const char *mem_path, const char *handle, const char *who,
		       int (*change)(unsigned char *page, void *context), void *context)
{
	static unsigned char page[KHIB_PAGE];
	unsigned long long address;
	const char *nonce;
	char *end;
	int fd, status = -1;

	address = strtoull(handle, &end, 0);
	nonce = end + 1;
	if (*end != ':' || strlen(nonce) != KHIB_STATUS_NONCE || address % KHIB_PAGE) {
		fprintf(stderr, "%s: %s is not ADDRESS:NONCE of a status page\n", who, handle);
		return -1;
	}
	fd = open(mem_path, O_RDWR);
	if (fd < 0 || khib_mem_copy(fd, page, sizeof(page), address, 0) < 0) {
		fprintf(stderr, "%s: reading 0x%llx from %s: %s\n", who, address, mem_path,
			strerror(errno));
		goto out;
	}
	if (memcmp(page, KHIB_STATUS_MAGIC, MAGIC_SIZE) ||
	    memcmp(page + MAGIC_SIZE, nonce, KHIB_STATUS_NONCE)) {
		fprintf(stderr, "%s: 0x%llx is not the status page A set aside: nothing written\n",
			who, address);
		goto out;
	}
	if (change(page, context) < 0)
		goto out;
	if (khib_mem_copy(fd, page, sizeof(page), address, 1) < 0) {
		fprintf(stderr, "%s: writing 0x%llx: %s\n", who, address, strerror(errno));
		goto out;
	}
	status = 0;
out:
	khib_wipe(page, sizeof(page));
	if (fd >= 0)
		close(fd);
	return status;
}

int khib_status_put_text(unsigned char *page, void *context)
{
	const struct khib_status_text *t = context;
	size_t length = strlen(t->text);

	if (length > t->end - t->at - 1)
		length = t->end - t->at - 1;
	memset(page + t->at, 0, t->end - t->at);
	memcpy(page + t->at, t->text, length);
	return 0;
}

int khib_report_main(int argc, char **argv)
{
	const char *mem_path = "/dev/mem", *target = NULL, *message = NULL, *key_out = NULL;
	struct khib_status_text text;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem_path = argv[++i];
		else if (!strcmp(argv[i], "--take-key") && i + 1 < argc)
			key_out = argv[++i];
		else if (!target)
			target = argv[i];
		else if (!message)
			message = argv[i];
		else
			return usage();
	}
	if (!target || !message == !key_out)
		return usage();
	if (key_out)
		return khib_status_update(mem_path, target, "khib-report", take_key,
					  (void *)key_out) < 0;
	text = (struct khib_status_text){message, KHIB_STATUS_MESSAGE_AT, KHIB_STATUS_RETURN_AT};
	return khib_status_update(mem_path, target, "khib-report", khib_status_put_text,
				  &text) < 0;
}
