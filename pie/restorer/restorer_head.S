/*
 * The restorer's entry, callable with the SysV ABI (from C or ctypes):
 * long __export_restorer_entry(struct restorer_args *args).
 *
 * The caller's stack lives in memory the restore unmaps, so the restorer
 * runs on a stack inside its own blob. rbx is callee-saved, so it keeps the
 * caller's rsp across restorer_main; the push keeps both stacks 16-byte
 * aligned at the call as the ABI requires.
 */
#include <asm/unistd_64.h>
#include "protocol.h"

	.section .head.text, "ax", @progbits
	.globl __export_restorer_entry
	.type __export_restorer_entry, @function
__export_restorer_entry:
	pushq %rbx
	movq %rsp, %rbx
	leaq restorer_stack_top(%rip), %rsp
	call restorer_main
	movq %rbx, %rsp
	popq %rbx
	ret
	.size __export_restorer_entry, . - __export_restorer_entry

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

	.section .bss.restorer_stack, "aw", @nobits
	.balign 16
restorer_stack:
	.skip RESTORER_STACK_SIZE
restorer_stack_top:

	.section .note.GNU-stack, "", @progbits
