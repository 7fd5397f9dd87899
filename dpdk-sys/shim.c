/* Helpers for what bindgen cannot reach: DPDK's thread-local errno. */
#include <rte_errno.h>

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
