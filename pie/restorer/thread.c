/*
 * The thread's segment bases: fs_base is glibc's thread pointer (TLS,
 * errno, the rseq area's address). No signal frame carries them, so
 * rt_sigreturn leaves the restoring process's own values in place; they
 * are set here, before the return into the task.
 */
#include "restore.h"
#include "syscall.h"

#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002

long restore_thread_area(const struct restorer_args *args, u64 *detail)
{
	long ret;

	*detail = args->fs_base;
	ret = sys_call2(__NR_arch_prctl, ARCH_SET_FS, args->fs_base);
	if (ret)
		return ret;
	*detail = args->gs_base;
	return sys_call2(__NR_arch_prctl, ARCH_SET_GS, args->gs_base);
}
