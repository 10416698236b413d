/*
 * The restorer's C entry: called by the head on the restorer's own stack
 * with the argument block, it runs the mode the block asks for.
 *
 * Each mode is a named function (and the restore a sequence of named steps)
 * so a reader follows the restore from the function names alone.
 */
#include "log.h"
#include "restore.h"
#include "restorer.h"
#include "uapi.h"

long restorer_main(struct restorer_args *args)
{
	log_init(args->log_fd);
	switch (args->mode) {
	case RESTORER_MODE_SELFTEST:
		return restorer_selftest(args);
	case RESTORER_MODE_RESTORE:
		restore_process(args);
	default:
		log_line("restorer: unknown mode %u", args->mode);
		return -EINVAL;
	}
}
