/*
 * The exe loader's own steps (the restore steps it shares with the
 * restorer are in pie/common/restore.h). Each returns 0 or fails the whole
 * start with one line on stderr and exit status 1 (loader_fail): nothing of
 * the process has run yet, so there is nothing to undo.
 */
#ifndef LOADER_H
#define LOADER_H

#include "protocol.h"
#include "types.h"

void loader_main(struct loader_args *la, u64 *kernel_sp) __attribute__((noreturn));
void loader_fail(const char *what, long err, u64 detail) __attribute__((noreturn));

/* checks.c */
u32 crc32(u32 crc, const u8 *data, u64 len);
long open_exe(void);
void check_exe_checksum(int fd);
void check_xfeatures(const struct loader_args *la);
void open_mapped_files(const struct loader_args *la);
void check_mapped_files(const struct loader_args *la);

/* kernel_maps.c */
struct kernel_mappings {
	u64 stack_start, stack_end;
	u64 vdso_start, vdso_end;
	u64 vvar_start, vvar_end;
	u64 vclock_start, vclock_end;
};
void read_kernel_mappings(struct kernel_mappings *km);
void place_vdso(const struct loader_args *la, struct restorer_args *args, const struct kernel_mappings *km);

/* namespaces.c: 1 in the process under its dumped PID (P and C1 never return), 0 where there are no namespaces
 * to be had (*why: unshare's error). */
int enter_namespaces(const struct restorer_args *args, long *why);

/* fds.c */
void reopen_fds(const struct loader_args *la);

#endif
