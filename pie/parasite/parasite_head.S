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
 * parasite_sigreturn(sp): leave through rt_sigreturn on the frame the runtime
 * built from the task's saved context. The kernel reads the rt_sigframe at
 * rsp - 8 (where a handler's return address would have been popped), so sp
 * is the address of the frame's struct ucontext.
 */
	.text
	.globl parasite_sigreturn
	.hidden parasite_sigreturn
	.type parasite_sigreturn, @function
parasite_sigreturn:
	movq %rdi, %rsp
	movl $__NR_rt_sigreturn, %eax
	syscall
	int3
	.size parasite_sigreturn, . - parasite_sigreturn

	.section .bss.parasite_stack, "aw", @nobits
	.balign 16
parasite_stack:
	.skip PARASITE_STACK_SIZE
parasite_stack_top:

	.section .note.GNU-stack, "", @progbits
