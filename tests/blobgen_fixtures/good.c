/* A blob that needs every supported recipe: PC32/PLT32 calls, R_X86_64_64 pointers in data, a GOT slot, bss. */
#include "types.h"

typedef u64 (*step)(u64 x);

static u64 add_one(u64 x)
{
	return x + 1;
}

static u64 twice(u64 x)
{
	return x * 2;
}

static const step steps[] = { add_one, twice };
__attribute__((visibility("hidden"))) u64 got_value = 40;
__attribute__((visibility("hidden"))) u64 calls;

/* fixture_entry(x) = (x + 1) * 2 + 40 + 1 on the first call after placement. */
u64 EXPORT(fixture_entry)(u64 x)
{
	const step *table = steps;
	u64 *through_got;
	size_t i;

	__asm__("" : "+r"(table));
	__asm__("movq got_value@GOTPCREL(%%rip), %0" : "=r"(through_got));
	for (i = 0; i < ARRAY_SIZE(steps); i++)
		x = table[i](x);
	calls++;
	return x + *through_got + calls;
}
