/*
 * The address space steps: clear the old one, set the mm fields, map the
 * target's VMAs, fill their pages from the pages image and protect them.
 *
 * Mappings are made writable first because preadv writes the page data
 * through them; the final protections come after, in protect_vmas, and the
 * madvise advice the dump found (DONTFORK, WIPEONFORK, ...) last, in
 * advise_vmas.
 */
#include "restore.h"
#include "syscall.h"
#include "uapi.h"

/*
 * At most this many bytes per preadv: the kernel adds to the task's rchar
 * once per call, and the restoring parent's progress bar reads rchar
 * (runtime/progress.py), so one call for a whole 1 GiB run would show
 * nothing until it ends. 64 MiB is a few hundredths of a second of copying.
 */
#define FILL_CHUNK (64ULL << 20)

long unmap_old(const struct restorer_args *args, u64 *detail)
{
	const struct restorer_range *keep = (const struct restorer_range *)args->keep;
	u64 cur = 0;
	long ret;
	u32 i;

	/* keep[] is sorted: the restorer area and the running vDSO/vvar pages. */
	for (i = 0; i <= args->nr_keep; i++) {
		u64 end = i < args->nr_keep ? keep[i].start : TASK_SIZE;

		if (end > cur) {
			ret = sys_call2(__NR_munmap, cur, end - cur);
			if (ret) {
				*detail = cur;
				return ret;
			}
		}
		if (i < args->nr_keep)
			cur = keep[i].end;
	}
	return 0;
}

long set_mm_map(struct restorer_args *args, u64 *detail)
{
	/*
	 * Only the whole-map form works without CAP_SYS_RESOURCE, and the kernel
	 * refuses to change exe_fd (EBUSY) while any VMA still maps the old exe,
	 * so this runs after unmap_old and before the target's mappings exist.
	 */
	return sys_call5(__NR_prctl, PR_SET_MM, PR_SET_MM_MAP, &args->mm, sizeof(args->mm), 0);
}

static u32 initial_prot(const struct restorer_vma *vma)
{
	/* shmat maps a segment readable, and writable unless SHM_RDONLY; it gets no page data either. */
	if (vma->shmid >= 0)
		return (vma->shmflg & SHM_RDONLY) ? PROT_READ : PROT_READ | PROT_WRITE;
	/* A shared file mapping gets no page data (the file holds it) and may be read-only. */
	if ((vma->flags & MAP_SHARED) && vma->fd >= 0)
		return vma->prot;
	return vma->prot | PROT_READ | PROT_WRITE;
}

/*
 * A SysV segment is attached with shmat, never mmap'ed from a file: only
 * shmat's mapping counts in the segment's nattch and can be shmdt'ed. One
 * shmat maps the whole segment; the attach's later VMAs (it was split by
 * mprotect) lie inside it. Without SHM_REMAP shmat refuses (EINVAL) a range
 * that overlaps a mapping, as MAP_FIXED_NOREPLACE does.
 */
static long attach_segment(const struct restorer_vma *v)
{
	long addr;

	if (v->offset)
		return 0;
	addr = sys_call3(__NR_shmat, v->shmid, v->start, v->shmflg);
	if (!IS_ERR_VALUE(addr) && (u64)addr != v->start)
		return -EINVAL;
	return IS_ERR_VALUE(addr) ? addr : 0;
}

long map_vmas(const struct restorer_args *args, u64 *detail)
{
	const struct restorer_vma *vmas = (const struct restorer_vma *)args->vmas;
	u64 i;

	for (i = 0; i < args->nr_vmas; i++) {
		const struct restorer_vma *v = &vmas[i];
		long addr;

		if (v->shmid >= 0)
			addr = attach_segment(v);
		else /* NOREPLACE: a VMA overlapping the restorer or the vDSO is an error, not a clobber. */
			addr = sys_call6(__NR_mmap, v->start, v->end - v->start, initial_prot(v),
					 v->flags | MAP_FIXED_NOREPLACE, v->fd, v->offset);
		if (IS_ERR_VALUE(addr)) {
			*detail = v->start;
			return addr;
		}
	}
	return 0;
}

static u64 consume(struct k_iovec *iov, u64 n, u64 done)
{
	u64 i = 0;

	while (i < n && done >= iov[i].len) {
		done -= iov[i].len;
		i++;
	}
	if (i < n && done) {
		iov[i].base += done;
		iov[i].len -= done;
	}
	return i;
}

long fill_pages(const struct restorer_args *args, u64 *detail)
{
	/* Page runs are stored back to back in vaddr order: one sequential read. */
	struct k_iovec *iov = (struct k_iovec *)args->iovs;
	u64 left = args->nr_iovs, pos = args->pages_offset;

	while (left) {
		u64 batch = left < UIO_MAXIOV ? left : UIO_MAXIOV;
		u64 bytes = 0, i, full_len = 0;
		long got;
		u64 used;

		/* Shorten the iovec that crosses FILL_CHUNK for this call; its full length goes back before consume. */
		for (i = 0; i < batch; i++) {
			bytes += iov[i].len;
			if (bytes >= FILL_CHUNK) {
				full_len = iov[i].len;
				iov[i].len -= bytes - FILL_CHUNK;
				batch = i + 1;
				break;
			}
		}
		got = sys_call5(__NR_preadv, args->pages_fd, iov, batch, pos, 0);
		if (full_len)
			iov[batch - 1].len = full_len;
		if (got <= 0) {
			*detail = iov->base;
			return got ? got : -EIO; /* the pages file ended early */
		}
		pos += got;
		used = consume(iov, batch, got);
		iov += used;
		left -= used;
	}
	return 0;
}

long protect_vmas(const struct restorer_args *args, u64 *detail)
{
	const struct restorer_vma *vmas = (const struct restorer_vma *)args->vmas;
	u64 i;

	for (i = 0; i < args->nr_vmas; i++) {
		const struct restorer_vma *v = &vmas[i];
		long ret;

		if (initial_prot(v) == v->prot)
			continue;
		ret = sys_call3(__NR_mprotect, v->start, v->end - v->start, v->prot);
		if (ret) {
			*detail = v->start;
			return ret;
		}
	}
	return 0;
}

long advise_vmas(const struct restorer_args *args, u64 *detail)
{
	/*
	 * After fill_pages: MADV_MERGEABLE hands the pages to ksmd, which
	 * write-protects the ones it merges, and every preadv into them would
	 * break the merge again. The advice does not depend on the protections.
	 */
	const struct restorer_vma *vmas = (const struct restorer_vma *)args->vmas;
	u64 i;

	for (i = 0; i < args->nr_vmas; i++) {
		const struct restorer_vma *v = &vmas[i];
		u32 advice;

		for (advice = 0; advice < 32; advice++) {
			long ret;

			if (!(v->advice & (1U << advice)))
				continue;
			ret = sys_call3(__NR_madvise, v->start, v->end - v->start, advice);
			if (ret) {
				/* start is page-aligned: the low bits say which advice the kernel refused. */
				*detail = v->start | advice;
				return ret;
			}
		}
	}
	return 0;
}

long close_fds(const struct restorer_args *args, u64 *detail)
{
	const s32 *fds = (const s32 *)args->close_fds;
	u32 i;

	for (i = 0; i < args->nr_close_fds; i++) {
		long ret = sys_call1(__NR_close, fds[i]);

		if (ret) {
			*detail = (u64)fds[i];
			return ret;
		}
	}
	return 0;
}
