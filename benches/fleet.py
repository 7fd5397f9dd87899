#!/usr/bin/env python3
"""Fleet measurements for scripts/bench-fleet (issue 13), against running nodes; stdlib only.

  (a) simple capture of `--limit` packets sent to the first node: POST until `success`, then the
      download; the median of `--runs` (the nodes need simple_interval_seconds = 0)
  (b) API latency on the first node at a fixed `--rate` requests/s, open loop: each request has a
      scheduled send time and its latency counts from then, so a slow answer delays the figures
      of the ones queued behind it (no coordinated omission); GET list and GET one capture
  (c) etcd requests per create: pcapd_fleet_etcd_requests_total of the first node and summed over
      all nodes across `--creates` simple captures, less the background rate (keepalives, member
      lists) measured just before over as long as the creates took (at least `--secs`)

Usage: benches/fleet.py --token T --account A [--runs 5 --creates 50 --secs 5 --rate 200] URL...
"""
import argparse
import http.client
import json
import queue
import statistics
import sys
import threading
import time
import urllib.parse


class Api:
    """One keep-alive connection to a node (reopened after an error)."""

    def __init__(self, base, token):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = None

    def call(self, method, path, body=None):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.conn.request(method, path, body=body, headers=self.headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None):
        status, data = self.call(method, path, body)
        v = json.loads(data)
        if status != 200 or not v.get("success"):
            sys.exit(f"fleet bench: {method} {path}: {status} {v.get('errors')}")
        return v["result"]


def metric(api, name):
    _, body = api.call("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    sys.exit(f"fleet bench: no {name} in {api.host}:{api.port}/metrics")


def create(api, pcaps, limit):
    body = json.dumps(
        {"system": "magic-transit", "type": "simple", "time_limit": 300, "packet_limit": limit}
    ).encode()
    return api.json("POST", pcaps, body)["id"]


def simple_capture(api, pcaps, limit):
    """(seconds POST → success, seconds of the download, the capture, bytes downloaded)."""
    t0 = time.perf_counter()
    cid = create(api, pcaps, limit)
    while True:
        c = api.json("GET", f"{pcaps}/{cid}")
        if c["status"] not in ("pending", "conversion_running"):
            break
        time.sleep(0.005)
    t1 = time.perf_counter()
    if c["status"] != "success":
        sys.exit(f"fleet bench: capture {cid} {c['status']}: {c.get('error_message')}")
    status, data = api.call("GET", f"{pcaps}/{cid}/download")
    t2 = time.perf_counter()
    if status != 200:
        sys.exit(f"fleet bench: download of {cid}: {status}")
    return t1 - t0, t2 - t1, c, len(data)


def open_loop(base, token, path, rate, secs, workers=16):
    """Latencies (s) of GETs of `path` sent at `rate`/s for `secs` s, from their scheduled times."""
    todo = queue.Queue()
    lat, errors, lock = [], [0], threading.Lock()

    def worker():
        api = Api(base, token)
        while (sched := todo.get()) is not None:
            try:
                status, _ = api.call("GET", path)
                ok = status == 200
            except OSError:
                ok = False
            done = time.perf_counter()
            with lock:
                lat.append(done - sched)
                errors[0] += not ok

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start = time.perf_counter() + 0.2
    for i in range(int(rate * secs)):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        todo.put(due)
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    return sorted(lat), errors[0], len(lat) / took


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("urls", nargs="+")
    ap.add_argument("--token", required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--creates", type=int, default=50)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--limit", type=int, default=10000)
    a = ap.parse_args()
    apis = [Api(u, a.token) for u in a.urls]
    first = apis[0]
    pcaps = f"/client/v4/accounts/{a.account}/pcaps"

    # Every node sees all the others (its member list lags by up to a second) and holds at least
    # `limit` samples (each answers its earliest `limit` in the window).
    deadline = time.time() + 120
    while (min(metric(x, "pcapd_samples_stored_total") for x in apis) < a.limit
           or min(metric(x, "pcapd_fleet_live_nodes") for x in apis) < len(apis)):
        if time.time() > deadline:
            sys.exit(f"fleet bench: within 120 s, not every node saw {len(apis)} live nodes and stored "
                     f"{a.limit} samples")
        time.sleep(0.5)
    stored = [int(metric(x, "pcapd_samples_stored_total")) for x in apis]
    live = int(metric(first, "pcapd_fleet_live_nodes"))

    # (a) One warm-up, then the runs.
    simple_capture(first, pcaps, a.limit)
    runs = [simple_capture(first, pcaps, a.limit) for _ in range(a.runs)]
    conv = statistics.median(r[0] for r in runs)
    dl = statistics.median(r[1] for r in runs)
    total = statistics.median(r[0] + r[1] for r in runs)
    last = runs[-1][2]
    print(f"fleet: {live} live nodes; samples stored per node: {', '.join(map(str, stored))}")
    print(f"{'simple capture':<34} {'nodes':>5} {'packets':>8} {'MB':>6} {'POST→success':>13} "
          f"{'download':>9} {'total':>8} {'< 1 s':>6}")
    print(f"{f'packet_limit {a.limit}, median of {a.runs}':<34} {live:>5} {last['packets_captured']:>8} "
          f"{runs[-1][3] / 1e6:>6.2f} {conv * 1e3:>10.0f} ms {dl * 1e3:>6.0f} ms {total * 1e3:>5.0f} ms "
          f"{'yes' if total < 1 else 'NO':>6}")
    if last.get("error_message"):
        print(f"  note: {last['error_message']}")
    print(f"  runs (ms, POST→success + download): "
          + ", ".join(f"{r[0] * 1e3:.0f}+{r[1] * 1e3:.0f}" for r in runs))

    # (c) etcd requests per create: background first, then the creates, then as long again
    # without (the background is quantised: a keepalive every 3 s, a member list every second).
    def counters():
        return [metric(x, "pcapd_fleet_etcd_requests_total") for x in apis]

    def background(secs):
        c0, t0 = counters(), time.perf_counter()
        time.sleep(secs)
        c1, t1 = counters(), time.perf_counter()
        return [(b - a_) / (t1 - t0) for a_, b in zip(c0, c1)]

    bg_before = background(a.secs)
    c0, t0 = counters(), time.perf_counter()
    codes = {}
    for _ in range(a.creates):
        body = json.dumps({"system": "magic-transit", "type": "simple", "time_limit": 300, "packet_limit": 1})
        status, _ = first.call("POST", pcaps, body.encode())
        codes[status] = codes.get(status, 0) + 1
    c1, t1 = counters(), time.perf_counter()
    bg_after = background(a.secs)
    bg = [(x + y) / 2 for x, y in zip(bg_before, bg_after)]
    took = t1 - t0
    delta = [b - a_ for a_, b in zip(c0, c1)]
    per_first = (delta[0] - bg[0] * took) / a.creates
    per_all = (sum(delta) - sum(bg) * took) / a.creates
    print(f"{'etcd requests per create':<34} {'creates':>8} {'answers':>14} {'node 1':>8} {'all nodes':>10} "
          f"{'background/s':>13}")
    answers = " ".join(f"{k}×{v}" for k, v in sorted(codes.items()))
    print(f"{f'simple, packet_limit 1, in {took:.2f} s':<34} {a.creates:>8} {answers:>14} {per_first:>8.2f} "
          f"{per_all:>10.2f} {sum(bg):>13.2f}")

    # Wait for the conversions of (c) to end before measuring latency.
    deadline = time.time() + 60
    while any(c["status"] in ("pending", "conversion_running") for c in first.json("GET", pcaps)):
        if time.time() > deadline:
            break
        time.sleep(0.2)

    # (b) API latency at a fixed rate.
    count = len(first.json("GET", pcaps))
    one = f"{pcaps}/{runs[-1][2]['id']}"
    # The server's own p99 (pcapd's histogram of the route, over every request since start):
    # the difference to the client's is queueing and scheduling outside the handler.
    print(f"{f'API on node 1, open loop':<34} {'req/s':>8} {'sent/s':>8} {'p50':>8} {'p99':>8} {'max':>8} {'errors':>7} "
          f"{'server p99':>11}")
    route = "/client/v4/accounts/{account_id}/pcaps"
    for label, path, r in ((f"GET list ({count} captures)", pcaps, route), ("GET one capture", one, route + "/{pcap_id}")):
        lat, errors, achieved = open_loop(a.urls[0], a.token, path, a.rate, a.secs)
        server = metric(first, f'pcapd_api_request_duration_seconds{{route="{r}",quantile="0.99"}}')
        print(f"{label:<34} {a.rate:>8.0f} {achieved:>8.0f} {pct(lat, 0.5) * 1e3:>5.1f} ms "
              f"{pct(lat, 0.99) * 1e3:>5.1f} ms {lat[-1] * 1e3:>5.1f} ms {errors:>7} {server * 1e3:>8.1f} ms")


if __name__ == "__main__":
    main()
