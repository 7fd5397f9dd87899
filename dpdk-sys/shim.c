/* Helpers for what bindgen cannot reach: DPDK's thread-local errno, a log stream. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <rte_errno.h>
#include <rte_log.h>
#include "wrapper.h"

int pcapd_rte_errno(void) { return rte_errno; }

#include <rte_mbuf.h>

/* rte_pktmbuf_free_bulk, compiled into pcapd: the exported one lives in librte_mbuf.so, where its
 * per-lcore mempool-cache lookup pays a __tls_get_addr call per put. Same logic as DPDK's
 * (lib/mbuf/rte_mbuf.c): every segment through rte_pktmbuf_prefree_seg, then bulk puts per pool. */
void pcapd_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count)
{
	struct rte_mbuf *pending[64];
	unsigned int n = 0;

	for (unsigned int i = 0; i < count; i++) {
		struct rte_mbuf *m = mbufs[i];
		while (m != NULL) {
			struct rte_mbuf *next = m->next;
			m = rte_pktmbuf_prefree_seg(m);
			if (m != NULL) {
				if (n == RTE_DIM(pending) || (n > 0 && m->pool != pending[0]->pool)) {
					rte_mempool_put_bulk(pending[0]->pool, (void **)pending, n);
					n = 0;
				}
				pending[n++] = m;
			}
			m = next;
		}
	}
	if (n > 0)
		rte_mempool_put_bulk(pending[0]->pool, (void **)pending, n);
}

/* DPDK's log as a callback: rte_vlog formats each message into this FILE* and flushes it, so
 * the write function runs on the logging thread right after the message was formatted, while
 * rte_log_cur_msg_loglevel() still holds that message's level. */
static pcapd_log_fn pcapd_log_cb;

static ssize_t pcapd_log_write(void *cookie, const char *buf, size_t len)
{
	(void)cookie;
	pcapd_log_fn cb = __atomic_load_n(&pcapd_log_cb, __ATOMIC_ACQUIRE);
	if (cb != NULL)
		cb((uint32_t)rte_log_cur_msg_loglevel(), buf, len);
	return (ssize_t)len;
}

int pcapd_log_route(pcapd_log_fn cb)
{
	cookie_io_functions_t io = { .read = NULL, .write = pcapd_log_write, .seek = NULL, .close = NULL };
	FILE *f = fopencookie(NULL, "w", io);
	if (f == NULL)
		return -errno;
	__atomic_store_n(&pcapd_log_cb, cb, __ATOMIC_RELEASE);
	/* The stream stays open for the life of the process: DPDK may log until exit. */
	return rte_openlog_stream(f);
}
