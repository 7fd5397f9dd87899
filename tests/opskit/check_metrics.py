"""Parses a /metrics scrape with prometheus_client's text parser (the reference Python client)
and checks it: every family parses, histogram buckets are cumulative and end in +Inf = _count,
pcapd_build_info is 1 with its three labels. Prints the family and sample names as JSON.

usage: check_metrics.py FILE
"""
import json
import math
import sys
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    families = list(text_string_to_metric_families(text))
    # Every `# TYPE` line became a family: nothing was silently merged or dropped.
    declared = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]
    assert len(declared) == len(set(declared)), "a family declared twice"
    names = {f.name for f in families}
    for d in declared:
        base = d[: -len("_total")] if d.endswith("_total") else d
        assert d in names or base in names, f"{d} declared but not parsed"

    histograms = 0
    for f in families:
        assert f.samples, f"{f.name}: no samples"
        for s in f.samples:
            assert not math.isnan(s.value), f"{s.name}{s.labels}: NaN"
        if f.type != "histogram":
            continue
        series = defaultdict(list)
        counts = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series[key].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                counts[key] = s.value
        for key, buckets in series.items():
            bounds = [b for b, _ in buckets]
            assert bounds == sorted(bounds), f"{f.name}{key}: bounds out of order"
            assert bounds[-1] == math.inf, f"{f.name}{key}: no +Inf bucket"
            values = [v for _, v in buckets]
            assert all(a <= b for a, b in zip(values, values[1:])), f"{f.name}{key}: not cumulative: {values}"
            assert values[-1] == counts[key], f"{f.name}{key}: +Inf {values[-1]} != _count {counts[key]}"
            histograms += 1

    info = [s for f in families for s in f.samples if s.name == "pcapd_build_info"]
    assert len(info) == 1, f"build_info: {info}"
    assert info[0].value == 1
    assert set(info[0].labels) == {"version", "revision", "dpdk"}, info[0].labels
    assert all(info[0].labels.values()), info[0].labels

    samples = sorted({s.name for f in families for s in f.samples})
    print(json.dumps({"families": sorted(names), "samples": samples, "histogram_series": histograms,
                      "types": {f.name: f.type for f in families}}))


if __name__ == "__main__":
    main()
