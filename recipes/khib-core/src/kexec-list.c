/*
 * A loaded kexec image's entry list, read and checked before anything trusts it: which
 * source page holds each destination (window) page.
 *
 * The list is the kimage's: words of a physical page address and one flag (destination
 * 0x1, indirection 0x2, done 0x4, source 0x8), its head in the control page (where
 * relocate_kernel left it), each indirection page's last word the next one's entry.  It
 * is trusted only as the kernel makes it (kernel/kexec_core.c: kimage_add_entry,
 * kimage_alloc_page): a destination before the first source, the done entry at its end,
 * each destination once; each source once, never the control page or an indirection page,
 * and either its own destination or no destination at all.
 *
 * With the window (khib-other, in the kernel that loaded the image), the list must also be
 * the running kernel's image of B: every destination in the window (reading stops at the
 * first outside it, or once the list names more pages than the window holds), every
 * source in its RAM, and every page of the image, control, indirection and source alike,
 * kexec's still: kimage_alloc_pages sets PG_reserved on each page it allocates for an
 * image and kimage_free_pages clears it as it frees them (6.1 to 7.2), and
 * /proc/kpageflags shows it (KPF_RESERVED).  Each is checked before it is read: an image
 * unloaded since holds freed pages, whatever they still hold.
 */
#define _GNU_SOURCE
#include "oldmem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ENTRIES (KHIB_PAGE / WORD)   /* an indirection page's */

static int compare_addresses(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int in_window(const struct khib_old_memory *m, uint64_t page)
{
	return page >= m->window_start && page < m->window_end;
}

/* Whether the page at paddr is one the running kernel holds for a kexec image (with the
 * window; without it, the list is another kernel's and nothing is asked); if not, why. */
static int kexecs(const struct khib_old_memory *m, uint64_t paddr, char *why, size_t size)
{
	unsigned char flags[8];

	if (!m->window_end ||
	    (khib_pread_full(m->kpageflags, flags, sizeof(flags),
			     paddr / KHIB_PAGE * sizeof(flags)) == 0 &&
	     ((uint64_t)khib_little(flags, sizeof(flags)) >> KPF_RESERVED) & 1u))
		return 1;
	snprintf(why, size, "its page 0x%llx is no loaded image's (not reserved in "
		 "/proc/kpageflags): B's was unloaded since", (unsigned long long)paddr);
	return 0;
}

/* The list's page at paddr (the control page, an indirection page), checked to be the
 * image's, recorded and read into page. */
static int list_page(struct khib_old_memory *m, uint64_t paddr, size_t most,
		     unsigned char *page, char *why, size_t size)
{
	if (m->nlisting >= most) {
		snprintf(why, size, "it goes on past %zu pages of its own", most);
		return -1;
	}
	if (!kexecs(m, paddr, why, size))
		return -1;
	m->listing[m->nlisting++] = paddr;
	if (khib_ram_page(m, paddr, page) < 0) {
		snprintf(why, size, "its page 0x%llx is unreadable", (unsigned long long)paddr);
		return -1;
	}
	return 0;
}

/* Pairs up to limit: the list whose head is the word at control_page + at. */
static int read_list(struct khib_old_memory *m, uint64_t control_page, uint64_t at,
		     uint64_t limit, char *why, size_t size)
{
	static unsigned char page[KHIB_PAGE];
	size_t most = (size_t)(2u * limit / (ENTRIES - 1u) + 2u), capacity = 0, index;
	uint64_t dest = 0;
	int placed = 0;

	m->nwindow = m->nlisting = 0;
	snprintf(why, size, "an entry is malformed, or the list is unterminated");
	if (list_page(m, control_page, most, page, why, size) < 0)
		return -1;
	index = (size_t)(at / WORD);
	for (;;) {
		uint64_t entry = (uint64_t)khib_little(page + index * WORD, WORD) &
				 (WORD == 8 ? ~0ull : 0xffffffffull);
		uint64_t address = entry & ~(uint64_t)(KHIB_PAGE - 1);
		if (entry == IND_DONE)
			return 0;
		if ((entry & IND_FLAGS) == IND_INDIRECTION) {
			if (list_page(m, address, most, page, why, size) < 0)
				return -1;
			index = 0;
			continue;
		}
		if ((entry & IND_FLAGS) == IND_DESTINATION) {
			dest = address;
			placed = 1;
		} else if ((entry & IND_FLAGS) == IND_SOURCE && placed) {
			if (m->nwindow == limit || (m->window_end && !in_window(m, dest))) {
				snprintf(why, size, "it names %s", m->nwindow == limit ?
					 "more pages than the window holds" :
					 "a page outside the window");
				return -1;
			}
			if (m->nwindow == capacity) {
				size_t grown = capacity ? 2 * capacity : 4096;
				void *more;
				grown = grown < limit ? grown : (size_t)limit;
				more = realloc(m->window, grown * sizeof(*m->window));
				if (!more)
					return -1;
				m->window = more;
				capacity = grown;
			}
			m->window[m->nwindow++] = (struct khib_pair){dest, address};
			dest += KHIB_PAGE;
		} else {
			return -1;   /* no flag, several, or a source before any destination */
		}
		if (++index == ENTRIES || m->nlisting == 1)   /* the head is one word */
			return -1;
	}
}

/*
 * Whether the list read is one to trust (see the top): then sorted by destination, and
 * nothing read before it (through no list) stays cached.  Without the window, every
 * destination lies outside the running kernel's memory.
 */
static int sane(struct khib_old_memory *m, char *why, size_t size)
{
	size_t count = m->nwindow + m->nlisting, i;
	uint64_t *pages = calloc(count ? count : 1, sizeof(*pages));
	int ok = m->nwindow > 0;

	if (!pages)
		return 0;
	qsort(m->window, m->nwindow, sizeof(*m->window), khib_compare_pairs);
	for (i = 0; ok && i < m->nwindow; i++) {
		const struct khib_pair *pair = &m->window[i];
		ok = (m->window_end ? in_window(m, pair->dest) &&
			      khib_inside(m->ranges, m->count, pair->source, KHIB_PAGE) &&
			      (pair->source == pair->dest || !in_window(m, pair->source))
			    : !khib_inside(m->ranges, m->count, pair->dest, 1)) &&
		     (!i || pair->dest != m->window[i - 1].dest) &&
		     (pair->source == pair->dest || !khib_moved(m, pair->source));
		pages[i] = pair->source;
	}
	if (!ok)
		snprintf(why, size, "%s", m->window_end ?
			 "a destination twice or outside the window, a source outside this kernel's "
			 "RAM or another page's destination" :
			 "a destination twice or in this kernel's memory, a source another page's "
			 "destination");
	memcpy(pages + m->nwindow, m->listing, m->nlisting * sizeof(*pages));
	qsort(pages, count, sizeof(*pages), compare_addresses);
	for (i = 1; ok && i < count; i++)
		if (pages[i] == pages[i - 1]) {
			snprintf(why, size, "its page 0x%llx is two of its pages (a source twice, or "
				 "a source that is the control page or an indirection page)",
				 (unsigned long long)pages[i]);
			ok = 0;
		}
	for (i = 0; ok && i < m->nwindow; i++)
		ok = kexecs(m, m->window[i].source, why, size);
	free(pages);
	memset(m->cached_valid, 0, sizeof(m->cached_valid));
	return ok;
}

int khib_backup_list(struct khib_old_memory *m, uint64_t control_page, int copied_code,
		     char *why, size_t size)
{
	uint64_t limit = m->window_end ? (m->window_end - m->window_start) / KHIB_PAGE
				       : KHIB_PAIRS_MAX;
	char found[160] = "none found";

	limit = limit < KHIB_PAIRS_MAX ? limit : KHIB_PAIRS_MAX;
	/* To 6.13, and on i386: CP_PA_BACKUP_PAGES_MAP, after the control code. */
	if (!copied_code && read_list(m, control_page, BACKUP_LIST_AT, limit, found,
				      sizeof(found)) == 0 && sane(m, found, sizeof(found)))
		return 0;
#if defined(__x86_64__)
	/*
	 * 6.14 on, x86_64: the control page starts with a copy of relocate_kernel's text and
	 * data (at most KEXEC_CONTROL_CODE_MAX_SIZE), the data being saved_rsp, saved_cr0,
	 * saved_cr3, saved_cr4, kexec_va_control_page, kexec_pa_table_page,
	 * kexec_pa_swap_page, pa_backup_pages_map, 8 bytes each, after text of no fixed
	 * length. The data is where kexec_va_control_page maps, through A's own page tables,
	 * to the control page itself; pa_backup_pages_map is then 24 bytes on. The list is
	 * read first and the mapping checked through it: the page tables may lie in the
	 * window, whose A pages only the list finds (the list's own pages never do: kexec
	 * takes them outside every destination).
	 */
	for (uint64_t at = 0; copied_code && at + 64 <= KEXEC_CONTROL_CODE_MAX_SIZE; at += 8) {
		int failed = 0;
		uint64_t va;

		m->nwindow = m->nlisting = 0;   /* nothing of a candidate before moves a read */
		memset(m->cached_valid, 0, sizeof(m->cached_valid));
		va = khib_old_word(m, control_page + at + 32, &failed);
		if (!failed && va && !(va & (KHIB_PAGE - 1)) &&
		    read_list(m, control_page, at + 56, limit, found, sizeof(found)) == 0 &&
		    sane(m, found, sizeof(found)) && khib_vtop(m, va) == control_page)
			return 0;
	}
#endif
	m->nwindow = m->nlisting = 0;
	snprintf(why, size, "the kexec list in the control page at 0x%llx: %s",
		 (unsigned long long)control_page, found);
	return -1;
}
