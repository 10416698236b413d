/* Fixed-width types for freestanding blob code (no libc headers). */
#ifndef PIE_TYPES_H
#define PIE_TYPES_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long s64;
typedef unsigned long size_t;
typedef long ssize_t;

#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Only symbols named __export_* are visible to the loader. */
#define EXPORT(name) __attribute__((visibility("default"), used)) __export_##name

#endif
