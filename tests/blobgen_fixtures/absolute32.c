/* Built with -fno-pic: taking an address gives R_X86_64_32, which a relocatable blob cannot express. */
#include "types.h"

__attribute__((visibility("hidden"))) long absolute_target = 7;

long EXPORT(fixture_entry)(void)
{
	return (long)&absolute_target;
}
