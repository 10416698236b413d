/*
 * The parasite's bootstrap: the runtime points the task's rip here with rdi
 * holding the address of struct parasite_init_args.
 *
 * Nothing of the task's own stack is touched: its rsp may point anywhere
 * (even into a red zone in use), so the head moves to the blob's own stack
 * before any push. The C entry never returns; if it did, int3 traps to the
 * tracer instead of running into whatever follows.
 */
#include <asm/unistd_64.h>
#include "protocol.h"

	.section .head.text, "ax", @progbits
	.globl __export_parasite_head_start
	.type __export_parasite_head_start, @function
__export_parasite_head_start:
	leaq parasite_stack_top(%rip), %rsp
	xorl %ebp, %ebp
	call parasite_main
	int3
	.size __export_parasite_head_start, . - __export_parasite_head_start

/*
 * Another thread's entry (rdi: struct parasite_thread_call), while the
 * leader serves commands on parasite_stack: one thread at a time runs here,
 * on a stack of its own, and leaves through parasite_exit.
 */
	.globl __export_parasite_thread_start
	.type __export_parasite_thread_start, @function
__export_parasite_thread_start:
	leaq parasite_thread_stack_top(%rip), %rsp
	xorl %ebp, %ebp
	call parasite_thread_main
	int3
	.size __export_parasite_thread_start, . - __export_parasite_thread_start

/*
 * parasite_exit(sp, base, size, syscall_ret): leave through rt_sigreturn on the
 * frame the runtime built from the task's saved context (below the red zone of
 * the task's own stack). The kernel reads the rt_sigframe at rsp - 8 (where a
 * handler's return address would have been popped), so sp is the address of
 * the frame's struct ucontext, and the frame's pretcode (at sp - 8) holds the
 * address of a `mov $15, %eax; syscall` in the task's own code.
 *
 * With syscall_ret (the address of a `syscall; ret` outside this blob) the
 * parasite also takes its own mapping away: the munmap runs from there, its
 * `ret` pops pretcode, and the rt_sigreturn runs from the task's code, so no
 * instruction executes in the unmapped area. Without it (0) the area stays
 * mapped, for the runtime or the next infection to remove.
 */
	.text
	.globl parasite_exit
	.hidden parasite_exit
	.type parasite_exit, @function
parasite_exit:
	testq %rcx, %rcx
	jz 1f
	leaq -8(%rdi), %rsp
	movq %rsi, %rdi
	movq %rdx, %rsi
	movl $__NR_munmap, %eax
	jmp *%rcx
1:	movq %rdi, %rsp
	movl $__NR_rt_sigreturn, %eax
	syscall
	int3
	.size parasite_exit, . - parasite_exit

	.section .bss.parasite_stack, "aw", @nobits
	.balign 16
parasite_stack:
	.skip PARASITE_STACK_SIZE
parasite_stack_top:

	.section .bss.parasite_thread_stack, "aw", @nobits
	.balign 16
parasite_thread_stack:
	.skip PARASITE_THREAD_STACK_SIZE
parasite_thread_stack_top:

	.section .note.GNU-stack, "", @progbits
