/* Data in a section the linker script does not place. */
#include "types.h"

__attribute__((section(".fixture_orphan"), used)) static long orphan_value = 3;

long EXPORT(fixture_entry)(void)
{
	return orphan_value;
}
