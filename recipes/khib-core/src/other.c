/*
 * khib-other: in the original kernel (A), after B jumped back, B's memory.
 *
 *   khib-other --control-page ADDR --window START:SIZE [--digest HEX] [--mem FILE]
 *              [--ram FILE] [--kpageflags FILE] ACTION
 *   ACTION: list | core OUT [--vmcoreinfo ADDR:SIZE] [--kernel-code ADDR]
 *           | poke PADDR FILE [--same N]
 *
 * B's kexec image stays loaded in A after B jumps back: kexec swapped each window page
 * with the page A's kernel allocated for it (its source), so B's memory is in those
 * pages while A runs, until A enters B again or unloads it.  The kimage's entry list
 * (destination, indirection, source entries) says which is which; A's kexec control
 * page (ADDR, the page of B's kexec_jump_back_entry=) holds its head, where relocate_kernel
 * left it.  The list is trusted only as kexec-list.c says: as the kernel makes it, every
 * destination in the window and every source in A's RAM (--ram, /proc/iomem), every page
 * of it still the image's (--kpageflags, /proc/kpageflags), and, with --digest, if it is
 * the list recorded when B came back (the SHA-256 of its sorted pairs).  Nothing but the
 * window's pages is read as B's: B's note or page tables anywhere else are not read.
 *
 * list: how many pages the image holds and the list's digest.  core: B's memory as a
 * plain ELF core, a PT_LOAD per run of window pages at B's physical addresses (and its
 * direct-map addresses, from B's VMCOREINFO note, which goes in too).  poke: FILE's bytes
 * into B's memory at PADDR, every byte inside the window; --same N: only if B's memory
 * already holds the first N bytes of FILE there.  Each page is read back after it is
 * written.
 */
#define _GNU_SOURCE
#include "vmcoreinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POKE_MAX (1u << 20)

static int usage(void)
{
	fprintf(stderr, "usage: khib-other --control-page ADDR --window START:SIZE [--digest HEX] "
		"[--mem FILE] [--ram FILE] [--kpageflags FILE]\n"
		"       (list | core OUT [--vmcoreinfo ADDR:SIZE] [--kernel-code ADDR] | "
		"poke PADDR FILE [--same N])\n");
	return 2;
}

/* The list's pairs, sorted, as a SHA-256 in hex. */
static void list_digest(const struct khib_old_memory *m, char hex[65])
{
	struct khib_sha256 sha;
	unsigned char digest[32], bytes[16];

	khib_sha256_init(&sha);
	for (size_t i = 0; i < m->nwindow; i++) {
		for (unsigned b = 0; b < 8; b++) {
			bytes[b] = (unsigned char)(m->window[i].dest >> (8 * b));
			bytes[8 + b] = (unsigned char)(m->window[i].source >> (8 * b));
		}
		khib_sha256_update(&sha, bytes, sizeof(bytes));
	}
	khib_sha256_final(&sha, digest);
	for (size_t i = 0; i < sizeof(digest); i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/* B's memory as a plain core at path (written beside it, then renamed). */
static int write_core(struct khib_old_memory *m, const char *path, const char *vmcoreinfo,
		      const char *kernel_code)
{
	struct khib_kernel_layout l = {.who = "B"};
	struct khib_load *loads = calloc(m->nwindow, sizeof(*loads));
	uint64_t note = 0, note_size = 0, code = 0, page_offset = 0, offset;
	static unsigned char page[KHIB_PAGE];
	char *text = NULL, why[192] = "", *beside = NULL;
	size_t count = 0, text_size = 0;
	int out = -1, status = -1;

	if (!loads)
		goto fail;
	if (vmcoreinfo && (!khib_parse_pair(vmcoreinfo, &note, &note_size) ||
			   (kernel_code && !khib_parse_pair(kernel_code, &code, NULL)))) {
		fprintf(stderr, "khib-other: malformed --vmcoreinfo or --kernel-code\n");
		free(loads);
		return -1;
	}
	if (vmcoreinfo && !(text = khib_read_note(m, note, note_size, &text_size)))
		fprintf(stderr, "khib-other: B's VMCOREINFO note at 0x%llx is unreadable or not in "
			"B's window: the core has none\n", (unsigned long long)note);
	l.text = text;
	if (text && khib_read_layout(m, &l, code, why, sizeof(why)) == 0)
		page_offset = khib_direct_map(m, &l);
	else if (text)
		fprintf(stderr, "khib-other: B's direct map is unknown (%s): p_vaddr is p_paddr\n",
			why);
	for (size_t i = 0; i < m->nwindow; i++) {
		struct khib_load *last = count ? &loads[count - 1] : NULL;
		if (last && last->paddr + last->size == m->window[i].dest)
			last->size += KHIB_PAGE;
		else
			loads[count++] = (struct khib_load){m->window[i].dest, KHIB_PAGE, 0};
	}
	offset = khib_core_data_start(count, text_size);
	for (size_t r = 0; r < count; r++) {
		loads[r].offset = offset;
		offset += loads[r].size;
	}
	if (asprintf(&beside, "%s.part", path) < 0) {
		beside = NULL;
		goto fail;
	}
	out = open(beside, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (out < 0 || fchmod(out, 0600) < 0 ||
	    khib_core_headers(out, KHIB_MACHINE, text, text_size, page_offset, loads, count) < 0)
		goto fail;
	for (size_t r = 0; r < count; r++)
		for (uint64_t at = 0; at < loads[r].size; at += KHIB_PAGE)
			if (khib_old_read(m, loads[r].paddr + at, page, KHIB_PAGE) < 0 ||
			    khib_pwrite_full(out, page, KHIB_PAGE, loads[r].offset + at) < 0)
				goto fail;
	if (fsync(out) < 0 || close(out) < 0) {
		out = -1;
		goto fail;
	}
	out = -1;
	if (rename(beside, path) < 0)
		goto fail;
	printf("khib-other: %s: B's memory, %zu ranges, %llu MiB%s\n", path, count,
	       (unsigned long long)(m->nwindow * (uint64_t)KHIB_PAGE >> 20),
	       text ? ", with its VMCOREINFO" : "");
	status = 0;
	goto out;
fail:
	fprintf(stderr, "khib-other: writing %s: %s\n", path, strerror(errno));
	if (beside)
		unlink(beside);
out:
	if (out >= 0)
		close(out);
	free(beside);
	free(text);
	free(loads);
	return status;
}

/* Where B's byte at paddr is in A's memory now, or UINT64_MAX outside B's window. */
static uint64_t held_at(const struct khib_old_memory *m, uint64_t paddr)
{
	const struct khib_pair *pair = khib_moved(m, paddr & ~(uint64_t)(KHIB_PAGE - 1));

	return pair ? pair->source + paddr % KHIB_PAGE : UINT64_MAX;
}

/* Whether every byte of [paddr, paddr + size) is one of B's window pages. */
static int all_of_b(const struct khib_old_memory *m, uint64_t paddr, size_t size)
{
	if (paddr > UINT64_MAX - size)
		return 0;
	for (uint64_t at = paddr; at < paddr + size; at = (at | (KHIB_PAGE - 1)) + 1)
		if (held_at(m, at) == UINT64_MAX)
			return 0;
	return 1;
}

/* FILE's bytes into B's memory at paddr (see the top). */
static int poke(struct khib_old_memory *m, const char *where, const char *path, const char *same)
{
	static unsigned char bytes[POKE_MAX], check[KHIB_PAGE];
	uint64_t paddr, expect = 0;
	struct stat st;
	size_t size;
	int fd;

	if (!khib_parse_pair(where, &paddr, NULL) || (same && !khib_parse_pair(same, &expect, NULL))) {
		fprintf(stderr, "khib-other: poke takes PADDR and --same N as numbers\n");
		return -1;
	}
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "khib-other: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (st.st_size < 1 || (uint64_t)st.st_size > POKE_MAX || expect > (uint64_t)st.st_size) {
		fprintf(stderr, "khib-other: %s holds %lld bytes: poke 1 to %u bytes%s\n", path,
			(long long)st.st_size, POKE_MAX, expect > (uint64_t)st.st_size ?
			", at least --same" : "");
		close(fd);
		return -1;
	}
	size = (size_t)st.st_size;
	if (khib_pread_full(fd, bytes, size, 0) < 0) {
		fprintf(stderr, "khib-other: %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (!all_of_b(m, paddr, size)) {
		fprintf(stderr, "khib-other: 0x%llx (%zu bytes) is not all in B's memory (its window "
			"0x%llx-0x%llx): nothing written\n", (unsigned long long)paddr, size,
			(unsigned long long)m->window_start, (unsigned long long)(m->window_end - 1));
		return -1;
	}
	for (size_t done = 0; done < expect;) {
		size_t part = KHIB_PAGE - (size_t)((paddr + done) % KHIB_PAGE);
		part = part < expect - done ? part : (size_t)expect - done;
		if (khib_old_read(m, paddr + done, check, part) < 0 || memcmp(check, bytes + done, part)) {
			fprintf(stderr, "khib-other: B's memory at 0x%llx is not what was expected "
				"there: nothing written\n", (unsigned long long)paddr);
			return -1;
		}
		done += part;
	}
	for (size_t done = 0; done < size;) {
		uint64_t to = held_at(m, paddr + done);
		size_t part = KHIB_PAGE - (size_t)(to % KHIB_PAGE);
		part = part < size - done ? part : size - done;
		if (khib_mem_copy(m->fd, bytes + done, part, to, 1) < 0 ||
		    khib_mem_copy(m->fd, check, part, to, 0) < 0 || memcmp(check, bytes + done, part)) {
			fprintf(stderr, "khib-other: writing B's 0x%llx (at 0x%llx in this kernel): "
				"%s\n", (unsigned long long)(paddr + done), (unsigned long long)to,
				errno ? strerror(errno) : "it reads back otherwise");
			return -1;
		}
		done += part;
	}
	printf("khib-other: wrote %zu bytes into B's memory at 0x%llx\n", size,
	       (unsigned long long)paddr);
	return 0;
}

int khib_other_main(int argc, char **argv)
{
	const char *mem_path = "/dev/mem", *ram = "/proc/iomem", *digest = NULL, *control = NULL;
	const char *flags_path = "/proc/kpageflags", *window = NULL, *vmcoreinfo = NULL;
	const char *kernel_code = NULL, *same = NULL, *action = NULL, *operand[2] = {NULL, NULL};
	struct khib_old_memory *m;
	struct khib_range *ranges = NULL;
	uint64_t control_page = 0, start = 0, size = 0;
	char why[192], hex[65];
	size_t count = 0, operands = 0;
	int status = 1;

	for (int i = 1; i < argc; i++) {
		const char **option = !strcmp(argv[i], "--mem") ? &mem_path :
				      !strcmp(argv[i], "--ram") ? &ram :
				      !strcmp(argv[i], "--kpageflags") ? &flags_path :
				      !strcmp(argv[i], "--digest") ? &digest :
				      !strcmp(argv[i], "--control-page") ? &control :
				      !strcmp(argv[i], "--window") ? &window :
				      !strcmp(argv[i], "--vmcoreinfo") ? &vmcoreinfo :
				      !strcmp(argv[i], "--kernel-code") ? &kernel_code :
				      !strcmp(argv[i], "--same") ? &same : NULL;
		if (option && i + 1 < argc)
			*option = argv[++i];
		else if (!option && !action && argv[i][0] != '-')
			action = argv[i];
		else if (!option && action && operands < 2 && argv[i][0] != '-')
			operand[operands++] = argv[i];
		else
			return usage();
	}
	if (!action || !control || !window || !khib_parse_pair(control, &control_page, NULL) ||
	    !khib_parse_pair(window, &start, &size) || !size || start > UINT64_MAX - size ||
	    (start | size) % KHIB_PAGE ||
	    operands != (!strcmp(action, "list") ? 0u : !strcmp(action, "core") ? 1u :
			 !strcmp(action, "poke") ? 2u : 3u))
		return usage();
	m = calloc(1, sizeof(*m));
	if (!m) {
		fprintf(stderr, "khib-other: %s\n", strerror(errno));
		return 1;
	}
	m->fd = open(mem_path, O_RDWR);
	m->kpageflags = m->fd < 0 ? -1 : open(flags_path, O_RDONLY);
	if (m->fd < 0 || m->kpageflags < 0 || khib_read_ranges(ram, &ranges, &count) < 0) {
		fprintf(stderr, "khib-other: %s: %s%s\n", m->fd < 0 ? mem_path :
			m->kpageflags < 0 ? flags_path : ram, strerror(errno),
			m->fd >= 0 && m->kpageflags < 0 && errno == ENOENT ?
			" (a kernel without CONFIG_PROC_PAGE_MONITOR)" : "");
		goto out;
	}
	m->ranges = ranges;
	m->count = count;
	m->window_start = start;
	m->window_end = start + size;
	if (khib_backup_list(m, control_page, 0, why, sizeof(why)) < 0) {
		fprintf(stderr, "khib-other: no loaded image of B to read: %s\n", why);
		goto out;
	}
	list_digest(m, hex);
	if (digest && strcmp(digest, hex)) {
		fprintf(stderr, "khib-other: the kexec image loaded now is not the B that jumped "
			"back (its page list changed): nothing read or written\n");
		goto out;
	}
	if (!strcmp(action, "list"))
		status = printf("pages=%zu digest=%s\n", m->nwindow, hex) < 0;
	else if (!strcmp(action, "core"))
		status = write_core(m, operand[0], vmcoreinfo, kernel_code) < 0;
	else
		status = poke(m, operand[0], operand[1], same) < 0;
out:
	if (m->fd >= 0)
		close(m->fd);
	if (m->kpageflags >= 0)
		close(m->kpageflags);
	free(m->window);
	free(ranges);
	free(m);
	return status;
}
