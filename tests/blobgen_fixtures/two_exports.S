/*
 * Two exports with padding between them; only the first has an ELF size.
 * From the object inspect ends the first at its size; from the .bin (no
 * sizes) at the next export; the second at the end of its section.
 */
	.text
	.globl __export_first
	.type __export_first, @function
__export_first:
	mov $1, %eax
	ret
	.size __export_first, . - __export_first
	.p2align 4
	.globl __export_second
__export_second:
	mov $2, %eax
	ret
	.section .note.GNU-stack, "", @progbits
