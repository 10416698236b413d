/*
 * The clone3 helper of spawn.c, shared by the restorer and the exe loader
 * (both create a process's other threads with it).
 */
#include <asm/unistd_64.h>

/*
 * long restorer_clone_thread(struct clone_args *args, u64 size, fn, arg):
 * clone3; the parent gets the new TID (or -errno) back. The kernel copies
 * every register into the new thread but rax (0) and rsp (the top of its
 * stack, 16-byte aligned), so fn and arg travel in r12 and r13, which the
 * parent saves first as the ABI wants them kept. fn never returns.
 */
	.text
	.globl restorer_clone_thread
	.hidden restorer_clone_thread
	.type restorer_clone_thread, @function
restorer_clone_thread:
	pushq %r12
	pushq %r13
	movq %rdx, %r12
	movq %rcx, %r13
	movl $__NR_clone3, %eax
	syscall
	testq %rax, %rax
	jz 1f
	popq %r13
	popq %r12
	ret
1:	xorl %ebp, %ebp
	movq %r13, %rdi
	call *%r12
	ud2
	.size restorer_clone_thread, . - restorer_clone_thread

	.section .note.GNU-stack, "", @progbits
