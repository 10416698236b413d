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

	.section .bss.restorer_stack, "aw", @nobits
	.balign 16
restorer_stack:
	.skip RESTORER_STACK_SIZE
restorer_stack_top:

	.section .note.GNU-stack, "", @progbits
