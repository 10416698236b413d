/*
 * The blobs' logger: printf-like lines written to a file descriptor given in
 * the blob's arguments (-1 keeps it silent).
 *
 * Each line goes out in a single write() so lines from the blob and from the
 * runtime sharing the descriptor never interleave mid-line. Formats: %d %i
 * %u %x %s %c %p %%, with an optional l (or ll, z) size; no widths.
 */
#ifndef PIE_LOG_H
#define PIE_LOG_H

void log_init(int fd);
void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
