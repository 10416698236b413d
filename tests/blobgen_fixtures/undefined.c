/* References a function no object defines. */
#include "types.h"

long missing_function(long x);

long EXPORT(fixture_entry)(long x)
{
	return missing_function(x);
}
