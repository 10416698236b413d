/* Memory and string helpers for blob code; the compiler may also emit calls to memcpy/memset. */
#ifndef PIE_STRING_H
#define PIE_STRING_H

#include "types.h"

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
