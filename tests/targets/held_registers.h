/* Inline-assembly pieces for targets that hold known values in registers and check them in a loop:
 * zmm0-31 (zmm_i loaded from v + i * 64), k2-k7 (0xNNNNabcdNNNN), r12-r15 (0x1212... to 0x1515...).
 * A CHECK that fails jumps to the local label 9 of the surrounding asm, where the target reports
 * CORRUPT. The asm statement needs [v] "r"(the 32 * 64 values) as an input operand.
 */
#ifndef HELD_REGISTERS_H
#define HELD_REGISTERS_H

#define LOAD(n) "vmovdqu64 " #n "*64(%[v]), %%zmm" #n "\n\t"
#define CHECK(n) "vpcmpeqq " #n "*64(%[v]), %%zmm" #n ", %%k1\n\t" \
	"kmovb %%k1, %%eax\n\tcmp $0xff, %%eax\n\tjne 9f\n\t"
#define KLOAD(n) "mov $0x" #n #n #n #n "abcd" #n #n #n #n ", %%rax\n\tkmovq %%rax, %%k" #n "\n\t"
#define KCHECK(n) "kmovq %%k" #n ", %%rax\n\tmov $0x" #n #n #n #n "abcd" #n #n #n #n ", %%rcx\n\t" \
	"cmp %%rcx, %%rax\n\tjne 9f\n\t"
#define GLOAD(r, v) "mov $" v ", %%" r "\n\t"
#define GCHECK(r, v) "mov $" v ", %%rax\n\tcmp %%rax, %%" r "\n\tjne 9f\n\t"

#define LOAD_HELD \
	LOAD(0) LOAD(1) LOAD(2) LOAD(3) LOAD(4) LOAD(5) LOAD(6) LOAD(7) \
	LOAD(8) LOAD(9) LOAD(10) LOAD(11) LOAD(12) LOAD(13) LOAD(14) LOAD(15) \
	LOAD(16) LOAD(17) LOAD(18) LOAD(19) LOAD(20) LOAD(21) LOAD(22) LOAD(23) \
	LOAD(24) LOAD(25) LOAD(26) LOAD(27) LOAD(28) LOAD(29) LOAD(30) LOAD(31) \
	KLOAD(2) KLOAD(3) KLOAD(4) KLOAD(5) KLOAD(6) KLOAD(7) \
	GLOAD("r12", "0x1212121212121212") GLOAD("r13", "0x1313131313131313") \
	GLOAD("r14", "0x1414141414141414") GLOAD("r15", "0x1515151515151515")

#define CHECK_HELD \
	CHECK(0) CHECK(1) CHECK(2) CHECK(3) CHECK(4) CHECK(5) CHECK(6) CHECK(7) \
	CHECK(8) CHECK(9) CHECK(10) CHECK(11) CHECK(12) CHECK(13) CHECK(14) CHECK(15) \
	CHECK(16) CHECK(17) CHECK(18) CHECK(19) CHECK(20) CHECK(21) CHECK(22) CHECK(23) \
	CHECK(24) CHECK(25) CHECK(26) CHECK(27) CHECK(28) CHECK(29) CHECK(30) CHECK(31) \
	KCHECK(2) KCHECK(3) KCHECK(4) KCHECK(5) KCHECK(6) KCHECK(7) \
	GCHECK("r12", "0x1212121212121212") GCHECK("r13", "0x1313131313131313") \
	GCHECK("r14", "0x1414141414141414") GCHECK("r15", "0x1515151515151515")

#endif
