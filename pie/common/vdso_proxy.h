/* The vDSO proxy step: the patched old vDSO back at its old address (see vdso_proxy.c). */
#ifndef RESTORER_VDSO_PROXY_H
#define RESTORER_VDSO_PROXY_H

#include "protocol.h"
#include "types.h"

long map_vdso_proxy(const struct restorer_vdso_proxy *proxy, u64 *detail);

#endif
