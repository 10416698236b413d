/*
 * The formatted line logger of log.h.
 *
 * The text is built in a buffer on the caller's stack and written at once;
 * a line longer than the buffer is cut, never split over two writes.
 */
#include "log.h"
#include "syscall.h"
#include "types.h"

#define LOG_LINE_MAX 256

/* The one global the logger owns; -1 until log_init and whenever silent. */
static int log_fd = -1;

struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
};

void log_init(int fd)
{
	log_fd = fd;
}

static void put_char(struct line *l, char c)
{
	/* One byte stays free for the newline. */
	if (l->len < LOG_LINE_MAX - 1)
		l->buf[l->len++] = c;
}

static void put_str(struct line *l, const char *s)
{
	if (!s)
		s = "(null)";
	while (*s)
		put_char(l, *s++);
}

static void put_unsigned(struct line *l, u64 value, unsigned int base)
{
	char digits[24];
	int n = 0;

	do {
		digits[n++] = "0123456789abcdef"[value % base];
		value /= base;
	} while (value);
	while (n)
		put_char(l, digits[--n]);
}

static void put_signed(struct line *l, s64 value)
{
	if (value < 0) {
		put_char(l, '-');
		put_unsigned(l, -(u64)value, 10);
	} else {
		put_unsigned(l, (u64)value, 10);
	}
}

/* Returns the format position after the conversion starting at fmt. */
static const char *put_conversion(struct line *l, const char *fmt, __builtin_va_list *ap)
{
	int longs = 0;

	while (*fmt == 'l' || *fmt == 'z') {
		longs = 1;
		fmt++;
	}
	switch (*fmt) {
	case 'd':
	case 'i':
		put_signed(l, longs ? __builtin_va_arg(*ap, long) : __builtin_va_arg(*ap, int));
		break;
	case 'u':
		put_unsigned(l, longs ? __builtin_va_arg(*ap, unsigned long) : __builtin_va_arg(*ap, unsigned int), 10);
		break;
	case 'x':
		put_unsigned(l, longs ? __builtin_va_arg(*ap, unsigned long) : __builtin_va_arg(*ap, unsigned int), 16);
		break;
	case 'p':
		put_str(l, "0x");
		put_unsigned(l, (u64)__builtin_va_arg(*ap, void *), 16);
		break;
	case 's':
		put_str(l, __builtin_va_arg(*ap, const char *));
		break;
	case 'c':
		put_char(l, (char)__builtin_va_arg(*ap, int));
		break;
	case '%':
		put_char(l, '%');
		break;
	case '\0':
		return fmt;
	default:
		put_char(l, '%');
		put_char(l, *fmt);
		break;
	}
	return fmt + 1;
}

void log_line(const char *fmt, ...)
{
	__builtin_va_list ap;
	struct line l;

	if (log_fd < 0)
		return;
	l.len = 0;
	__builtin_va_start(ap, fmt);
	while (*fmt) {
		if (*fmt == '%')
			fmt = put_conversion(&l, fmt + 1, &ap);
		else
			put_char(&l, *fmt++);
	}
	__builtin_va_end(ap);
	if (!l.len || l.buf[l.len - 1] != '\n')
		l.buf[l.len++] = '\n';
	sys_call3(__NR_write, log_fd, l.buf, l.len);
}
