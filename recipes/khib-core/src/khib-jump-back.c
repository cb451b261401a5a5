/*
 * khib-jump-back: in the kernel a kexec jump started (B), jump back to the original one.
 *
 *   khib-jump-back ENTRY [--mem /dev/mem] [--load-only]
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
 */
#define _GNU_SOURCE
#include "khib-core.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kexec.h>
#include <linux/reboot.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEPT_LOW "/sys/kernel/kexec_jump_low"

static int usage(void)
{
	fprintf(stderr, "usage: khib-jump-back ENTRY [--mem FILE] [--load-only]\n");
	return 2;
}

int khib_jump_back_main(int argc, char **argv)
{
	const char *mem_path = "/dev/mem";
	int load_only = 0, fd;
	unsigned long long entry = 0;
	uint64_t page;
	static unsigned char control[KHIB_PAGE];
	struct kexec_segment segment;
	struct khib_phys phys;
	char *end = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mem") && i + 1 < argc)
			mem_path = argv[++i];
		else if (!strcmp(argv[i], "--load-only"))
			load_only = 1;
		else if (!end && argv[i][0] != '-')
			entry = strtoull(argv[i], &end, 0);
		else
			return usage();
	}
	if (!end || *end || !entry)
		return usage();
	page = entry & ~(uint64_t)(KHIB_PAGE - 1);
	phys.mem = fd = open(mem_path, O_RDONLY);
	phys.low = open(KEPT_LOW, O_RDONLY);
	if (fd < 0 || khib_phys_copy(&phys, control, sizeof(control), page, 0) < 0) {
		fprintf(stderr, "khib-jump-back: reading the control page at 0x%llx from %s: %s\n",
			(unsigned long long)page, mem_path, strerror(errno));
		return 1;
	}
	close(fd);
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
		return 1;
	}
	if (load_only)
		return 0;
	sync();
	if (syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC,
		    NULL) == 0) {
		printf("khib-jump-back: back in this kernel (the original one jumped here again)\n");
		return 0;
	}
	fprintf(stderr, "khib-jump-back: the jump did not happen: %s\n", strerror(errno));
	return 1;
}
