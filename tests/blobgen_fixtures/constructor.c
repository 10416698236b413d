/* A constructor: nobody runs .init_array inside a foreign process. */
#include "types.h"

static long ready;

__attribute__((constructor)) static void fixture_constructor(void)
{
	ready = 1;
}

long EXPORT(fixture_entry)(void)
{
	return ready;
}
