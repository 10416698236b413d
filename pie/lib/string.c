/*
 * memcpy/memset/memcmp/strlen for blobs: -ffreestanding code still gets
 * memcpy/memset calls from the compiler for struct copies, so they must exist.
 */
#include "string.h"

__attribute__((visibility("hidden"))) void *memcpy(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

__attribute__((visibility("hidden"))) void *memset(void *dst, int c, size_t n)
{
	u8 *d = dst;

	while (n--)
		*d++ = (u8)c;
	return dst;
}

__attribute__((visibility("hidden"))) int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x < *y ? -1 : 1;
	return 0;
}

__attribute__((visibility("hidden"))) size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}
