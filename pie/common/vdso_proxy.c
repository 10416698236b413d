/*
 * Map the proxy: the dumped vDSO's bytes, every entry point already patched
 * by the runtime into a jump to the running vDSO, at the old vDSO's address.
 *
 * Runs after move_vdso (the running vDSO is at its new place, so nothing of
 * the kernel's is at the old address any more) and before the target's VMAs
 * are mapped. The copy is an ordinary private anonymous mapping, written
 * while writable and then made read+exec as the kernel maps a vDSO: the
 * process cannot write its entry points by accident, and a later dump finds
 * it by its content (the marker the runtime put in its last bytes).
 */
#include "string.h"
#include "syscall.h"
#include "uapi.h"
#include "vdso_proxy.h"

long map_vdso_proxy(const struct restorer_vdso_proxy *proxy, u64 *detail)
{
	long addr;

	if (!proxy->size)
		return 0;
	*detail = proxy->start;
	/* NOREPLACE: anything still at the old vDSO address is a planning error, not something to clobber. */
	addr = sys_call6(__NR_mmap, proxy->start, proxy->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (IS_ERR_VALUE(addr))
		return addr;
	if ((u64)addr != proxy->start)
		return -EEXIST; /* an old kernel without NOREPLACE placed it elsewhere */
	memcpy((void *)proxy->start, (const void *)proxy->image, proxy->size);
	return sys_call3(__NR_mprotect, proxy->start, proxy->size, PROT_READ | PROT_EXEC);
}
