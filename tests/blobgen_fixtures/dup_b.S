/* Defines a local __export_dup: two files doing so give a duplicate export. */
	.text
__export_dup:
	ret
	.section .note.GNU-stack, "", @progbits
