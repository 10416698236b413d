/* Thread-local storage: the target's TLS block is not ours. */
#include "types.h"

static __thread long tls_counter;

long EXPORT(fixture_entry)(void)
{
	return ++tls_counter;
}
