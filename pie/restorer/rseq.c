/*
 * Register the thread's rseq area with the dumped address, length and
 * signature. The restoring process unregistered its own glibc area before
 * entering the restorer, so the kernel accepts a new registration.
 */
#include "restore.h"
#include "syscall.h"

long register_rseq(const struct restorer_args *args, u64 *detail)
{
	if (!args->rseq_len)
		return 0;
	*detail = args->rseq_addr;
	return sys_call4(__NR_rseq, args->rseq_addr, args->rseq_len, 0, args->rseq_sig);
}
