/*
 * The credentials step: the task's ids, groups and capabilities, installed
 * after every step that needs the restoring process's privileges.
 *
 * Why last and why in this order: PR_SET_MM_MAP needs CAP_CHECKPOINT_RESTORE
 * and mapping the target's files needs the runtime's access, which a
 * non-root target lacks. Bounding-set drops need CAP_SETPCAP, so they come
 * while still root; setresuid to a non-zero uid clears the permitted set
 * unless KEEPCAPS is on, and capset can then only narrow what is kept.
 * A uid change resets dumpability, so PR_SET_DUMPABLE comes at the very end.
 *
 * On failure *detail says which call failed: the syscall number in bits
 * 32-47; for prctl also the option in bits 16-31 and its last non-zero
 * argument (the capability number, or the value set) in bits 0-15.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

static long prctl(long option, long arg2, long arg3, u64 *detail)
{
	*detail = (u64)__NR_prctl << 32 | (u64)option << 16 | (u64)((arg3 ? arg3 : arg2) & 0xffff);
	return sys_call5(__NR_prctl, option, arg2, arg3, 0, 0);
}

static long call_failed(long nr, u64 *detail)
{
	*detail = (u64)nr << 32;
	return -EPERM;
}

static long drop_bounding(const struct restorer_creds *c, u64 *detail)
{
	long ret;
	u32 cap;

	for (cap = 0; cap <= c->cap_last_cap; cap++) {
		if (c->cap_bounding >> cap & 1)
			continue;
		ret = prctl(PR_CAPBSET_DROP, cap, 0, detail);
		if (ret)
			return ret;
	}
	return 0;
}

static long set_ids(const struct restorer_creds *c, u64 *detail)
{
	long ret;

	*detail = (u64)__NR_setgroups << 32;
	ret = sys_call2(__NR_setgroups, c->nr_groups, c->groups);
	if (ret)
		return ret;
	*detail = (u64)__NR_setresgid << 32;
	ret = sys_call3(__NR_setresgid, c->gid, c->egid, c->sgid);
	if (ret)
		return ret;
	/* Without KEEPCAPS, leaving uid 0 empties the permitted set capset narrows from. */
	ret = prctl(PR_SET_KEEPCAPS, 1, 0, detail);
	if (ret)
		return ret;
	*detail = (u64)__NR_setresuid << 32;
	ret = sys_call3(__NR_setresuid, c->uid, c->euid, c->suid);
	if (ret)
		return ret;
	/* setfsuid/setfsgid return the previous id, never an error: asking again with -1 tells what took. */
	sys_call1(__NR_setfsuid, c->fsuid);
	if ((u32)sys_call1(__NR_setfsuid, -1) != c->fsuid)
		return call_failed(__NR_setfsuid, detail);
	sys_call1(__NR_setfsgid, c->fsgid);
	if ((u32)sys_call1(__NR_setfsgid, -1) != c->fsgid)
		return call_failed(__NR_setfsgid, detail);
	return prctl(PR_SET_KEEPCAPS, 0, 0, detail);
}

static long set_caps(const struct restorer_creds *c, u64 *detail)
{
	struct cap_header header = { .version = LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct cap_data data[2];
	long ret;
	u32 i;

	for (i = 0; i < 2; i++) {
		data[i].effective = (u32)(c->cap_effective >> (32 * i));
		data[i].permitted = (u32)(c->cap_permitted >> (32 * i));
		data[i].inheritable = (u32)(c->cap_inheritable >> (32 * i));
	}
	*detail = (u64)__NR_capset << 32;
	ret = sys_call2(__NR_capset, &header, data);
	if (ret)
		return ret;
	ret = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, detail);
	if (ret)
		return ret;
	for (i = 0; i <= c->cap_last_cap; i++) {
		if (!(c->cap_ambient >> i & 1))
			continue;
		ret = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, i, detail);
		if (ret)
			return ret;
	}
	return 0;
}

long restore_creds(const struct restorer_args *args, u64 *detail)
{
	const struct restorer_creds *c = &args->creds;
	long ret;

	ret = drop_bounding(c, detail);
	if (ret)
		return ret;
	ret = set_ids(c, detail);
	if (ret)
		return ret;
	ret = set_caps(c, detail);
	if (ret)
		return ret;
	if (c->no_new_privs) {
		ret = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, detail);
		if (ret)
			return ret;
	}
	return prctl(PR_SET_DUMPABLE, c->dumpable, 0, detail);
}
