/*
 * Move the running kernel's [vdso] and its [vvar]/[vvar_vclock] pages to
 * the addresses the target had them at (the running vDSO matches the dumped
 * one; the runtime checked before forking).
 *
 * mremap refuses a destination that overlaps the source, and moving one
 * piece may land on another piece's old place, so every piece that moves
 * goes first to a free temporary spot, then to its final address.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

static long remap(u64 from, u64 to, u64 size, u64 *detail)
{
	long ret = sys_call5(__NR_mremap, from, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, to);

	if (IS_ERR_VALUE(ret)) {
		*detail = from;
		return ret;
	}
	return 0;
}

long move_vdso(const struct restorer_args *args, u64 *detail)
{
	const struct restorer_remap *m = args->vdso_moves;
	u64 temp = args->vdso_temp;
	long ret;
	u32 i;

	for (i = 0; i < args->nr_vdso_moves; i++) {
		if (m[i].old_addr == m[i].new_addr)
			continue;
		ret = remap(m[i].old_addr, temp, m[i].size, detail);
		if (ret)
			return ret;
		temp += m[i].size;
	}
	temp = args->vdso_temp;
	for (i = 0; i < args->nr_vdso_moves; i++) {
		if (m[i].old_addr == m[i].new_addr)
			continue;
		ret = remap(temp, m[i].new_addr, m[i].size, detail);
		if (ret)
			return ret;
		temp += m[i].size;
	}
	return 0;
}
