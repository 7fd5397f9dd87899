/* The DPDK headers pcapd binds. Keep this list as narrow as the allowlist in build.rs. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_log.h>
#include <rte_version.h>
#include <rte_malloc.h>
/* tcpdump expressions: libpcap compiles them, rte_bpf converts (experimental API), verifies,
 * JIT-compiles and runs them (see pcapd's src/bpf/). */
#include <pcap/pcap.h>
#include <rte_bpf.h>

/* From shim.c: DPDK's per-lcore errno is a TLS variable bindgen cannot bind. */
int pcapd_rte_errno(void);
/* From shim.c: rte_pktmbuf_free_bulk with the mempool-cache lookup inlined into pcapd. */
void pcapd_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count);
/* From shim.c: DPDK's log delivered to `cb` (level as rte_log's RTE_LOG_*, bytes, length) through
 * a fopencookie stream installed with rte_openlog_stream. Returns 0 or -errno. */
typedef void (*pcapd_log_fn)(uint32_t level, const char *buf, size_t len);
int pcapd_log_route(pcapd_log_fn cb);
