/*
 * khib-core: khib-save, khib-restore, khib-jump-back, khib-report and khib-other in one static binary, run by
 * the name of a link to it (or as `khib-core PROGRAM ARGS...`).  One binary carries one
 * copy of the static C library instead of three: the i386 default image went from 6.55
 * to 5.85 MiB (gzip -9).
 */
#include "khib-core.h"

#include <string.h>

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
} programs[] = {
	{"khib-save", khib_save_main},
	{"khib-restore", khib_restore_main},
	{"khib-jump-back", khib_jump_back_main},
	{"khib-report", khib_report_main},
	{"khib-other", khib_other_main},
};

int main(int argc, char **argv)
{
	const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;

	name = name ? name + 1 : argc > 0 ? argv[0] : "";
	if (!strcmp(name, "khib-core") && argc > 1) {
		argc--;
		argv++;
		name = argv[0];
	}
	for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
		if (!strcmp(name, programs[i].name))
			return programs[i].main(argc, argv);
	fprintf(stderr, "usage: khib-core {khib-save|khib-restore|khib-jump-back|khib-report|khib-other} "
		"ARGS...\n"
		"       (or run through a link of one of those names)\n");
	return 2;
}
