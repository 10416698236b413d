/* What the restorer's files share: the modes restorer_main dispatches to. */
#ifndef RESTORER_H
#define RESTORER_H

#include "protocol.h"

long restorer_main(struct restorer_args *args);
long restorer_selftest(struct restorer_args *args);

#endif
