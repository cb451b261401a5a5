/*
 * The khib memory image on the disk: the one source of its constants.  The khib tools'
 * khib_tools/format.py carries the same values; tests/test_format_constants.py checks
 * that every KHIB_ define below has its twin there.
 *
 * An ELF64 core (ET_CORE).  Program headers of type KHIB_PT_MEMORY (private: the stored
 * bytes are compressed, not a plain PT_LOAD) carry the physical address of the memory
 * they hold in p_paddr and its size in p_memsz.  A run of all-zero pages, or of pages the
 * old kernel had free, has p_filesz 0 (recorded, not stored: a restore writes zeros); a
 * data run stores its memory at p_offset as blocks, each covering KHIB_BLOCK bytes of it
 * (the last one the rest): a 32-bit little-endian header, the stored length with
 * KHIB_BLOCK_RAW set when the bytes are kept as they are, then the bytes (LZ4 when
 * compressed).  Data comes first, from the second page on; the program headers and one
 * PT_NOTE follow it.  The PT_NOTE holds, in this order:
 *   KHIB KHIB_NOTE_SEGMENTS  one record per memory header, in the same order;
 *   KHIB KHIB_NOTE_META      what the saver was asked to record (JSON from the khib tools:
 *                            A's jump-back entry, RAM, window, the boot area's digests
 *                            and the hibernation's nonce);
 *   KHIB KHIB_NOTE_LAYOUT    what the saver found of the old kernel's layout, then the
 *                            window's pages kexec moved aside (destination, source);
 *   VMCOREINFO 0             the old kernel's VMCOREINFO text, when it was readable;
 *   KHIB KHIB_NOTE_SEAL      the seal: the image's size, the SHA-256 of (the SHA-256 of the
 *                            list of every stored block's SHA-256 -- its header and bytes --
 *                            the program headers, the notes before it) and with a key an
 *                            HMAC-SHA256 over the same.
 * The first page is not sealed: its first four bytes say what the image is (the ELF
 * magic once complete, written last; zeros while a save is under way or after one
 * failed; KHIB_USED_MAGIC once a resume used it; KHIB_ASIDE_MAGIC once a resume boot
 * refused it), and after the 64-byte ELF header a resume counts its attempts there.
 */
#ifndef KHIB_FORMAT_H
#define KHIB_FORMAT_H

#include <stdint.h>

#define KHIB_PAGE 4096u
#define KHIB_NOTE_NAME "KHIB"
#define KHIB_VMCOREINFO_NAME "VMCOREINFO"
#define KHIB_NOTE_SEGMENTS 0x4b480001u
#define KHIB_NOTE_META 0x4b480002u
#define KHIB_NOTE_LAYOUT 0x4b480003u
#define KHIB_NOTE_SEAL 0x4b480004u
#define KHIB_PT_MEMORY 0x6b480000u
#define KHIB_BLOCK (256u << 10)
#define KHIB_BLOCK_RAW 0x80000000u

/* What a reader accepts: every size in the image is checked against these first. */
#define KHIB_META_MAX (64u << 10)
#define KHIB_VMCOREINFO_MAX (1u << 20)
#define KHIB_PAIRS_MAX (1u << 20)        /* window pages moved aside: 4 GiB of window */
#define KHIB_SEGMENTS_MAX 0xfffeu        /* an ELF header counts 0xffff headers, one a note */
#define KHIB_NOTES_MAX (64u << 20)       /* the PT_NOTE segment */

/* The first page, outside the seal. */
#define KHIB_ELF_MAGIC "\177ELF"
#define KHIB_USED_MAGIC "KUSD"           /* a resume used it: never resumed twice */
#define KHIB_ASIDE_MAGIC "KSET"          /* a resume boot set it aside (why: at KHIB_WHY_AT) */
#define KHIB_ATTEMPTS_AT 64u             /* u32: resume boots that handed over to a restore */
#define KHIB_WRITES_AT 68u               /* u32: restores that began to write memory */
#define KHIB_WHY_AT 128u                 /* why it was set aside, NUL-terminated */
#define KHIB_WHY_MAX 256u
#define KHIB_ATTEMPTS_MAX 2u             /* resume boots that may hand over, at most */

/* khib-restore's exit status when it writes memory: what the caller may do next. */
#define KHIB_EXIT_WRITTEN 0              /* written and verified */
#define KHIB_EXIT_UNTOUCHED 1            /* refused or failed: nothing was written */
#define KHIB_EXIT_USAGE 2
#define KHIB_EXIT_PARTLY 3               /* failed after writing began: memory is changed */

/* The status page A sets aside for B (khib-report): magic, nonce, message, key. */
#define KHIB_STATUS_MAGIC "KHIBSTAT"
#define KHIB_STATUS_NONCE 16u
#define KHIB_STATUS_MESSAGE_AT 24u       /* B's verdict, NUL-terminated */
#define KHIB_STATUS_RETURN_AT 1024u      /* how A finds B after the jump back (khib-jump-back) */
#define KHIB_STATUS_KEY_AT 2048u         /* u32 length, then the key: B takes it, zeroes it */

/* B's mailbox: a page of B's that A writes before it enters B again (khib-jump-back). */
#define KHIB_MAILBOX_MAGIC "KHIBMBOX"
#define KHIB_MAILBOX_NONCE 16u
#define KHIB_MAILBOX_REQUEST_AT 24u      /* A's request: "STATUS-HANDLE\n[COMMAND]", NUL-ended */
#define KHIB_KEY_MIN 16u
#define KHIB_KEY_MAX 2040u               /* what fits in the status page after its length */

enum khib_kind { KHIB_DATA, KHIB_ZERO, KHIB_FREE };

struct khib_record {      /* one per memory header, little-endian on disk */
	uint64_t paddr;
	uint64_t memsz;
	uint32_t crc32;       /* of a data segment's memory; 0 for the others */
	uint32_t kind;        /* enum khib_kind */
};

struct khib_pair {        /* a window page kexec moved aside: where A had it, where it is */
	uint64_t dest;
	uint64_t source;
};

struct khib_layout {      /* the layout note's descriptor, followed by its pairs */
	uint64_t page_offset;     /* the old kernel's direct map: vaddr = paddr + this */
	uint64_t free_recorded;   /* pages recorded as free in this image */
	uint64_t free_counted;    /* free pages the walk found in the old kernel */
	uint64_t kernel_count;    /* NR_FREE_PAGES as the old kernel counted them */
	uint64_t npairs;
};

struct khib_seal {        /* the seal note's descriptor */
	uint64_t image_size;
	uint64_t keyed;           /* 1: hmac holds an HMAC-SHA256 */
	unsigned char sha256[32];
	unsigned char hmac[32];
};

#endif
