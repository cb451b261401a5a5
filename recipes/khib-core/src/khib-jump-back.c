/*
 * khib-jump-back: in the kernel a kexec jump started (B), jump back to the original one.
 *
 *   khib-jump-back ENTRY [--status ADDRESS:NONCE [--tell TEXT]] [--again] [--mem /dev/mem]
 *                  [--load-only]
 *
 * ENTRY is the kexec_jump_back_entry= value on B's command line: an address in the
 * original kernel's kexec control page.  kexec-tools' jump-back helper loads one empty
 * segment, and B then jumps to ENTRY through an identity map of B's own RAM only.  When
 * the control page lies outside B's memory (B confined with memmap=exactmap), that
 * jump faults on x86_64 and the machine resets.  So this loads the control page itself
 * as the one segment, a copy read through /dev/mem: the kernel identity-maps every
 * segment, and swapping the page with its own copy leaves it as it was.  A control page
 * below 640 KiB (a kernel before 5.13 may put one there) is read from what this kernel
 * keeps of the original one's memory there, /sys/kernel/kexec_jump_low, where it has it.
 *
 * A may enter B again (khib jump --again): its kexec -e returns here, and B goes back
 * with --again, through the image already loaded.  Not a new copy of the control page:
 * entering B swapped A's control page, as A had just written it, with the copy loaded
 * here, so the page now holds the older copy and the loaded segment A's current one;
 * jumping back through the same image swaps them back.
 *
 * With --status, before it jumps this tells A (in A's status page, after checking its
 * magic and nonce) the control page and B's mailbox: a page of this process's that A
 * writes its next request into before it enters B again ("entry=0x... mailbox=0x...:NONCE
 * TEXT").  The page is locked, but compaction may still move it: its address is looked
 * up again once everything else is done, just before the jump, and A is told again if
 * it moved; should it keep moving, A is told of no mailbox ("entry=0x... TEXT"), and can
 * read B but not enter it again.  Entered again, it prints the request (A's next status
 * page, then the command, if any) and exits 0; with no request (a kexec -e khib did not
 * ask for), it prints nothing.
 */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kexec.h>
#include <linux/reboot.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEPT_LOW "/sys/kernel/kexec_jump_low"
#define LOADED "/sys/kernel/kexec_loaded"
#define MAGIC_SIZE (sizeof(KHIB_MAILBOX_MAGIC) - 1u)
#define LOOKUPS 3   /* of the mailbox's address before A is told of none */

static int usage(void)
{
	fprintf(stderr, "usage: khib-jump-back ENTRY [--status ADDRESS:NONCE [--tell TEXT]] "
		"[--again] [--mem FILE] [--load-only]\n");
	return 2;
}

/* Load A's control page, as it is now, as the jump back's one segment. */
static int load(const char *mem_path, unsigned long long entry)
{
	static unsigned char control[KHIB_PAGE];
	uint64_t page = entry & ~(uint64_t)(KHIB_PAGE - 1);
	struct kexec_segment segment;
	struct khib_phys phys;

	phys.mem = open(mem_path, O_RDONLY);
	phys.low = open(KEPT_LOW, O_RDONLY);
	if (phys.mem < 0 || khib_phys_copy(&phys, control, sizeof(control), page, 0) < 0) {
		fprintf(stderr, "khib-jump-back: reading the control page at 0x%llx from %s: %s\n",
			(unsigned long long)page, mem_path, strerror(errno));
		return -1;
	}
	close(phys.mem);
	if (phys.low >= 0)
		close(phys.low);
	segment = (struct kexec_segment){
		.buf = control, .bufsz = sizeof(control),
		.mem = (const void *)(uintptr_t)page, .memsz = sizeof(control),
	};
	if (syscall(SYS_kexec_load, (unsigned long)entry, 1UL, &segment,
		    (unsigned long)KEXEC_PRESERVE_CONTEXT) < 0) {
		fprintf(stderr, "khib-jump-back: kexec_load: %s%s\n", strerror(errno),
			errno == EINVAL ? " (is this kernel built with CONFIG_KEXEC_JUMP?)" : "");
		return -1;
	}
	return 0;
}

/* Whether an image is loaded (the one an earlier jump back loaded). */
static int still_loaded(void)
{
	char flag = '0';
	int fd = open(LOADED, O_RDONLY);

	if (fd >= 0) {
		if (read(fd, &flag, 1) != 1)
			flag = '0';
		close(fd);
	}
	if (flag != '1')
		fprintf(stderr, "khib-jump-back: --again, but nothing is loaded (%s)\n", LOADED);
	return flag == '1';
}

/* The physical address of this process's page at page (/proc/self/pagemap), or 0. */
static uint64_t frame_of(const void *page)
{
	uint64_t entry = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0 || khib_pread_full(fd, &entry, sizeof(entry),
				      (uint64_t)(uintptr_t)page / KHIB_PAGE * 8u) < 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	if (!(entry >> 63) || !(entry & ((1ull << 55) - 1))) {
		errno = EPERM;
		return 0;
	}
	return (entry & ((1ull << 55) - 1)) * KHIB_PAGE;
}

/* A locked page of this process's with the mailbox's magic and a fresh nonce, and its
 * physical address; NULL and a message. */
static unsigned char *mailbox(uint64_t *paddr)
{
	unsigned char *page = mmap(NULL, KHIB_PAGE, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
	unsigned char random[KHIB_MAILBOX_NONCE / 2];

	if (page == MAP_FAILED) {
		fprintf(stderr, "khib-jump-back: a mailbox page: %s\n", strerror(errno));
		return NULL;
	}
	memset(page, 0, KHIB_PAGE);
	memcpy(page, KHIB_MAILBOX_MAGIC, MAGIC_SIZE);
	if (getrandom(random, sizeof(random), 0) != (ssize_t)sizeof(random))
		goto fail;
	for (size_t i = 0; i < sizeof(random); i++)
		snprintf((char *)page + MAGIC_SIZE + 2 * i, 3, "%02x", random[i]);
	page[MAGIC_SIZE + KHIB_MAILBOX_NONCE] = 0;
	*paddr = frame_of(page);
	if (*paddr)
		return page;
fail:
	fprintf(stderr, "khib-jump-back: the mailbox's address: %s\n", strerror(errno));
	munmap(page, KHIB_PAGE);
	return NULL;
}

/* Into A's status page: where A finds B once B is back, its mailbox at box_paddr (none if
 * 0).  0, or -1 and a message. */
static int tell_a(const char *mem_path, const char *status, unsigned long long entry,
		  uint64_t box_paddr, const unsigned char *box, const char *tell)
{
	char record[KHIB_STATUS_KEY_AT - KHIB_STATUS_RETURN_AT], mailbox_word[64] = "";
	struct khib_status_text text = {record, KHIB_STATUS_RETURN_AT, KHIB_STATUS_KEY_AT};

	if (box_paddr)
		snprintf(mailbox_word, sizeof(mailbox_word), " mailbox=0x%llx:%.*s",
			 (unsigned long long)box_paddr, (int)KHIB_MAILBOX_NONCE,
			 (const char *)box + MAGIC_SIZE);
	snprintf(record, sizeof(record), "entry=0x%llx%s %s", entry, mailbox_word, tell);
	return khib_status_update(mem_path, status, "khib-jump-back", khib_status_put_text,
				  &text);
}

int khib_jump_back_main(int argc, char **argv)
{
	const char *mem_path = "/dev/mem", *status = NULL, *tell = "";
	int load_only = 0, again = 0;
	unsigned long long entry = 0;
	unsigned char *box = NULL;
	uint64_t box_paddr = 0;
	char nonce[KHIB_MAILBOX_NONCE] = "";
	char *end = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem_path = argv[++i];
		else if (!strcmp(argv[i], "--status") && i + 1 < argc)
			status = argv[++i];
		else if (!strcmp(argv[i], "--tell") && i + 1 < argc)
			tell = argv[++i];
		else if (!strcmp(argv[i], "--load-only"))
			load_only = 1;
		else if (!strcmp(argv[i], "--again"))
			again = 1;
		else if (!end && argv[i][0] != '-')
			entry = strtoull(argv[i], &end, 0);
		else
			return usage();
	}
	if (!end || *end || !entry)
		return usage();
	if (again ? !still_loaded() : load(mem_path, entry) < 0)
		return 1;
	if (load_only)
		return 0;
	if (status) {
		box = mailbox(&box_paddr);
		if (!box || tell_a(mem_path, status, entry, box_paddr, box, tell) < 0)
			return 1;
		memcpy(nonce, box + MAGIC_SIZE, sizeof(nonce));
	}
	sync();
	/* The mailbox may have moved meanwhile (sync() can take long): A is told again. */
	for (int lookups = 1; box_paddr; lookups++) {
		uint64_t now = frame_of(box);
		if (now == box_paddr)
			break;
		box_paddr = now && lookups < LOOKUPS ? now : 0;
		fprintf(stderr, "khib-jump-back: the mailbox moved%s\n", box_paddr ?
			": A is told where it is now" : ": A is told of none (B cannot be entered "
			"again)");
		if (tell_a(mem_path, status, entry, box_paddr, box, tell) < 0)
			return 1;
	}
	if (syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC,
		    NULL) != 0) {
		fprintf(stderr, "khib-jump-back: the jump did not happen: %s\n", strerror(errno));
		return 1;
	}
	fprintf(stderr, "khib-jump-back: back in this kernel (the original one entered it "
		"again)\n");
	if (box && !memcmp(box, KHIB_MAILBOX_MAGIC, MAGIC_SIZE) &&
	    !memcmp(box + MAGIC_SIZE, nonce, KHIB_MAILBOX_NONCE) && box[KHIB_PAGE - 1] == 0)
		fputs((const char *)box + KHIB_MAILBOX_REQUEST_AT, stdout);
	else if (box)
		fprintf(stderr, "khib-jump-back: A left no request in the mailbox\n");
	if (box) {
		khib_wipe(box, KHIB_PAGE);
		munmap(box, KHIB_PAGE);
	}
	return 0;
}
