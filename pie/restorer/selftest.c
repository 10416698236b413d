/*
 * RESTORER_MODE_SELFTEST: proves a placed restorer blob runs where it was
 * put, on its own stack, with its load-time relocations applied.
 *
 * The steps are called through a table of absolute function pointers in the
 * blob's data: each pointer holds a load-time relocation, so a loader that
 * misapplies them crashes or gives a different result. The empty asm hides
 * the table's contents from the optimizer, which would otherwise call the
 * steps directly and need no relocation at all. The function computed is
 * documented with restorer_args in pie/protocol.toml.
 */
#include "log.h"
#include "restorer.h"

typedef u64 (*selftest_step)(u64 x);

static u64 step_multiply(u64 x)
{
	return x * 0x9E3779B97F4A7C15UL;
}

static u64 step_fold(u64 x)
{
	return x ^ (x >> 29);
}

static u64 step_add(u64 x)
{
	return x + 0x632BE59BD9B4E019UL;
}

static u64 step_rotate(u64 x)
{
	return (x << 17) | (x >> 47);
}

static const selftest_step selftest_steps[] = {
	step_multiply,
	step_fold,
	step_add,
	step_rotate,
};

long restorer_selftest(struct restorer_args *args)
{
	const selftest_step *steps = selftest_steps;
	u64 x = args->selftest_in;
	u64 sp;
	size_t i;

	__asm__("" : "+r"(steps));
	for (i = 0; i < ARRAY_SIZE(selftest_steps); i++)
		x = steps[i](x);
	__asm__ volatile("movq %%rsp, %0" : "=r"(sp));
	args->selftest_out = x;
	args->selftest_sp = sp;
	log_line("restorer: selftest in=%lx out=%lx sp=%p", args->selftest_in, x, (void *)sp);
	return 0;
}
