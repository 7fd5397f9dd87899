/* Helpers for what bindgen cannot reach: DPDK's thread-local errno. */
#include <rte_errno.h>

int pcapd_rte_errno(void) { return rte_errno; }
