/* say(): printf to stdout as one write(2) per line, for targets whose threads or processes share one
 * stdout: lines never interleave (stdio's buffer would split them), and a failed write ends the target.
 */
#ifndef SAY_H
#define SAY_H

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(line))
		n = sizeof(line) - 1;
	if (n > 0 && write(STDOUT_FILENO, line, n) != n)
		_exit(1);
}

#endif
