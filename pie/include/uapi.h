/*
 * The kernel's x86_64 ABI as blob code uses it: errno values, signal,
 * memory, prctl, capability and AF_UNIX socket constants and structs.
 *
 * Declared here, once, because blob code cannot include libc's headers and
 * a constant copied into each file that needs it drifts. The kernel's
 * layouts the runtime reads too (k_sigaction, k_itimerval, k_iovec) are
 * declared in pie/protocol.toml and come from protocol.h.
 */
#ifndef PIE_UAPI_H
#define PIE_UAPI_H

#include "protocol.h"
#include "types.h"

/* errno: returned negated, as the kernel does. */
#define EPERM 1
#define EINTR 4
#define EIO 5
#define EBADF 9
#define EAGAIN 11
#define EEXIST 17
#define EINVAL 22
#define EPIPE 32
#define ENOSYS 38
#define EPROTO 71
#define ECANCELED 125

/* Signals. rt_sigaction and friends take the size of the kernel's 64-bit sigset. */
#define SIGTRAP 5
#define SIGKILL 9
#define SIGPIPE 13
#define SIGSTOP 19
#define SIG_SETMASK 2
#define KERNEL_SIGSET_SIZE 8
#define SIGMASK(sig) (1UL << ((sig) - 1))

/* stack_t, as sigaltstack reads and writes it. */
struct kernel_stack {
	u64 ss_sp;
	s32 ss_flags;
	u32 pad0;
	u64 ss_size;
};

/*
 * struct ucontext: uc_flags @0, uc_link @8, uc_stack (24 bytes) @16,
 * uc_mcontext (struct sigcontext, 256 bytes) @40, then uc_sigmask.
 */
#define UCONTEXT_SIGMASK_OFFSET 296

struct kernel_timespec {
	s64 tv_sec;
	s64 tv_nsec;
};

/* Memory. */
#define PROT_READ 0x1
#define PROT_WRITE 0x2
#define PROT_EXEC 0x4
#define MAP_SHARED 0x01
#define MAP_PRIVATE 0x02
#define MAP_ANONYMOUS 0x20
#define MAP_FIXED_NOREPLACE 0x100000
/* shmat's flag for an attach that can never be written (the file opened read-only: no VM_MAYWRITE). */
#define SHM_RDONLY 010000
#define MREMAP_MAYMOVE 1
#define MREMAP_FIXED 2
/* Highest user address + 1 with 4-level paging. */
#define TASK_SIZE 0x7ffffffff000UL
/* preadv and vmsplice take at most this many iovecs per call. */
#define UIO_MAXIOV 1024

/* prctl options and their arguments. */
#define PR_GET_PDEATHSIG 2
#define PR_GET_DUMPABLE 3
#define PR_SET_DUMPABLE 4
#define PR_SET_KEEPCAPS 8
#define PR_SET_MM_MAP 14 /* PR_SET_MM's sub-option */
#define PR_SET_NAME 15
#define PR_CAPBSET_DROP 24
#define PR_GET_TSC 25
#define PR_GET_SECUREBITS 27
#define PR_GET_TIMERSLACK 30
#define PR_MCE_KILL_GET 34
#define PR_SET_MM 35
#define PR_GET_CHILD_SUBREAPER 37
#define PR_SET_NO_NEW_PRIVS 38
#define PR_GET_TID_ADDRESS 40
#define PR_GET_THP_DISABLE 42
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#define PR_GET_MDWE 66
#define PR_GET_MEMORY_MERGE 68
#define PR_TIMER_CREATE_RESTORE_IDS 77
#define PR_TIMER_CREATE_RESTORE_IDS_OFF 0
#define PR_TIMER_CREATE_RESTORE_IDS_ON 1

/* personality(0xffffffff) changes nothing and returns the current value. */
#define PERSONALITY_QUERY 0xffffffffUL

/* Threads: clone3's flags and arguments (struct clone_args, CLONE_ARGS_SIZE_VER2), futexes. */
#define CLONE_VM 0x00000100
#define CLONE_FS 0x00000200
#define CLONE_FILES 0x00000400
#define CLONE_SIGHAND 0x00000800
#define CLONE_THREAD 0x00010000
#define CLONE_SYSVSEM 0x00040000

struct clone_args {
	u64 flags;
	u64 pidfd;
	u64 child_tid;
	u64 parent_tid;
	u64 exit_signal;
	u64 stack;
	u64 stack_size;
	u64 tls;
	u64 set_tid;
	u64 set_tid_size;
	u64 cgroup;
};

#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

/* arch_prctl codes. */
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002

/* capget/capset: version 3 takes two cap_data, for capabilities 0-31 and 32-63. */
#define LINUX_CAPABILITY_VERSION_3 0x20080522

struct cap_header {
	u32 version;
	s32 pid;
};

struct cap_data {
	u32 effective;
	u32 permitted;
	u32 inheritable;
};

/* AF_UNIX sockets and SCM_RIGHTS. */
#define AF_UNIX 1
#define SOCK_SEQPACKET 5
#define SOCK_CLOEXEC 02000000
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define MSG_TRUNC 0x20
#define MSG_CTRUNC 0x08
#define MSG_NOSIGNAL 0x4000
#define MSG_CMSG_CLOEXEC 0x40000000
#define UNIX_PATH_MAX 108

/* Files (the exe loader opens the files a process mapped or held, by path). */
#define ENOENT 2
#define ESTALE 116
#define AT_FDCWD -100
#define O_RDONLY 0
#define O_CLOEXEC 02000000
#define SEEK_SET 0
#define F_SETFD 2

/* struct stat (x86_64): st_size at byte 48 of 144. */
struct kernel_stat {
	u64 dev;
	u64 ino;
	u64 nlink;
	u32 mode;
	u32 uid;
	u32 gid;
	u32 pad0;
	u64 rdev;
	s64 size;
	u8 rest[88];
};

struct sockaddr_un {
	u16 sun_family;
	u8 sun_path[UNIX_PATH_MAX];
};

struct msghdr {
	void *msg_name;
	u32 msg_namelen;
	struct k_iovec *msg_iov;
	size_t msg_iovlen;
	void *msg_control;
	size_t msg_controllen;
	u32 msg_flags;
};

struct cmsghdr {
	size_t cmsg_len;
	s32 cmsg_level;
	s32 cmsg_type;
};

/* Control data follows the header, each message padded to 8 bytes. */
#define CMSG_ALIGN(len) (((len) + sizeof(size_t) - 1) & ~(sizeof(size_t) - 1))
#define CMSG_LEN(len) (sizeof(struct cmsghdr) + (len))
#define CMSG_SPACE(len) (sizeof(struct cmsghdr) + CMSG_ALIGN(len))
#define CMSG_DATA(cmsg) ((u8 *)((struct cmsghdr *)(cmsg) + 1))

/*
 * Namespaces and the processes around the exe loader (pie/loader/namespaces.c): unshare's and clone3's flags,
 * waiting, polling, signalfd and the siginfo fields read.
 */
#define ENOSPC 28
#define EUSERS 87
#define CLONE_PIDFD 0x00001000
#define CLONE_NEWUSER 0x10000000
#define CLONE_NEWPID 0x20000000
#define SIGCHLD 17
#define SIGTSTP 20
#define SIGTTIN 21
#define SIGTTOU 22
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1
#define SI_KERNEL 0x80
#define CLD_EXITED 1
#define PR_SET_PDEATHSIG 1
#define P_PID 1
#define WNOHANG 1
#define WEXITED 4
#define WALL 0x40000000 /* __WALL */
#define O_WRONLY 1
#define O_NONBLOCK 04000
#define POLLIN 1
#define RLIMIT_CORE 4

struct pollfd {
	s32 fd;
	s16 events;
	s16 revents;
};

/* signalfd's record: the signal and its si_code, then fields not read here. */
struct signalfd_info {
	u32 signo;
	s32 err;
	s32 code;
	u8 rest[116];
};

/* The siginfo waitid fills for a child: si_code CLD_EXITED (status: the exit code) or a signal's death. */
struct child_siginfo {
	s32 signo;
	s32 err;
	s32 code;
	s32 pad0;
	s32 pid;
	u32 uid;
	s32 status;
	u8 rest[100];
};

struct kernel_rlimit {
	u64 cur;
	u64 max;
};

_Static_assert(sizeof(struct kernel_stack) == 24, "stack_t");
_Static_assert(sizeof(struct clone_args) == 88, "struct clone_args (CLONE_ARGS_SIZE_VER2)");
_Static_assert(sizeof(struct cap_data) == 12, "struct __user_cap_data_struct");
_Static_assert(sizeof(struct sockaddr_un) == 110, "struct sockaddr_un");
_Static_assert(sizeof(struct msghdr) == 56, "struct msghdr");
_Static_assert(sizeof(struct cmsghdr) == 16, "struct cmsghdr");
_Static_assert(sizeof(struct signalfd_info) == 128, "struct signalfd_siginfo");
_Static_assert(sizeof(struct child_siginfo) == 128, "siginfo_t");

#endif
