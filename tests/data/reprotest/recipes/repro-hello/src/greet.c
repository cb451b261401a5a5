#include <stdio.h>

#include "greet.h"

void greet(const char *file, const char *when)
{
	printf("built from %s on %s\n", file, when);
}
