/*
 * The exe loader's entry: e_entry of an executable `python -m runtime exe`
 * wrote (docs/exe.md). The kernel starts it with rsp at argc on the stack it
 * made; that stack is about to be unmapped, so the loader moves to its own
 * (in its bss) at once and never returns.
 *
 * __export_loader_args is one word the writer fills: the address of the
 * loader_args block it put after the blob.
 */
#include "protocol.h"

	.section .head.text, "ax", @progbits
	.globl __export_loader_entry
	.type __export_loader_entry, @function
__export_loader_entry:
	movq %rsp, %rsi
	leaq loader_stack_top(%rip), %rsp
	movq __export_loader_args(%rip), %rdi
	xorl %ebp, %ebp
	call loader_main
	ud2
	.size __export_loader_entry, . - __export_loader_entry

	.data
	.balign 8
	.globl __export_loader_args
	.type __export_loader_args, @object
__export_loader_args:
	.quad 0
	.size __export_loader_args, 8

	.section .bss.loader_stack, "aw", @nobits
	.balign 16
loader_stack:
	.skip LOADER_STACK_SIZE
loader_stack_top:

	.section .note.GNU-stack, "", @progbits
