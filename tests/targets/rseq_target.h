/* Shared by the rseq targets: their own rseq area and its registration.
 *
 * The targets register an area of their own, with their own signature, so
 * the test knows exactly what the kernel was told. glibc must not have
 * registered its own (run with GLIBC_TUNABLES=glibc.pthread.rseq=0): the
 * kernel allows one registration per thread.
 */
#ifndef RSEQ_TARGET_H
#define RSEQ_TARGET_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TARGET_RSEQ_SIG 0x5ee5c0de
#define TARGET_RSEQ_SIZE 32

/* The original 32-byte ABI of struct rseq (uapi linux/rseq.h). */
struct target_rseq {
	uint32_t cpu_id_start;
	uint32_t cpu_id;
	uint64_t rseq_cs;
	uint32_t flags;
	uint32_t pad[3];
} __attribute__((aligned(32)));

/* An x86 abort handler is preceded by the signature; the three bytes before
 * it make the signature the displacement of a `ud1 sig(%rip), %edi`, so a
 * disassembler (and a stray jump) sees one undefined instruction. */
#define TARGET_RSEQ_SIGNATURE_BYTES ".byte 0x0f, 0xb9, 0x3d\n\t.long %c[sig]\n\t"

static void register_target_rseq(struct target_rseq *area)
{
	if (__rseq_size != 0) {
		fprintf(stderr, "glibc registered rseq (size %u): run with GLIBC_TUNABLES=glibc.pthread.rseq=0\n",
			__rseq_size);
		exit(2);
	}
	area->cpu_id = (uint32_t)-1;
	if (syscall(__NR_rseq, area, TARGET_RSEQ_SIZE, 0, TARGET_RSEQ_SIG) != 0) {
		perror("rseq");
		exit(2);
	}
}

#endif
