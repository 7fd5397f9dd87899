#!/usr/bin/env python3
"""Generates config/demo-traffic.pcap: a small, realistic mix that the demo config replays forever.

Web (HTTPS over IPv4 and IPv6, some on VLAN 100), DNS, NTP, ICMP pings, SSH and ARP between a
handful of hosts, with an IMIX-like size mix (many small ACKs, full-size data segments). Run with
the project venv: `.venv/bin/python scripts/gen-demo-traffic.py` (the output is committed).
"""
import os
import random
import struct

from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw

random.seed(7)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "demo-traffic.pcap")
CLIENTS = [f"192.0.2.{i}" for i in range(10, 20)]
SERVERS = ["198.51.100.1", "198.51.100.2", "203.0.113.5"]
CLIENTS6 = [f"2001:db8:1::{i:x}" for i in range(10, 14)]
SERVER6 = "2001:db8:2::1"


def eth(vlan=None):
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return e / Dot1Q(vlan=vlan) if vlan else e


def payload(n):
    return Raw(bytes(random.getrandbits(8) for _ in range(n)))


def https(c, s, v6=False, vlan=None):
    ip = IPv6(src=c, dst=s) if v6 else IP(src=c, dst=s)
    ipr = IPv6(src=s, dst=c) if v6 else IP(src=s, dst=c)
    sport = random.randint(32768, 60999)
    pk = [eth(vlan) / ip / TCP(sport=sport, dport=443, flags="S"),
          eth(vlan) / ipr / TCP(sport=443, dport=sport, flags="SA"),
          eth(vlan) / ip / TCP(sport=sport, dport=443, flags="A"),
          eth(vlan) / ip / TCP(sport=sport, dport=443, flags="PA") / payload(random.randint(200, 600))]
    for _ in range(random.randint(2, 8)):
        pk.append(eth(vlan) / ipr / TCP(sport=443, dport=sport, flags="A") / payload(1460 if not v6 else 1440))
        pk.append(eth(vlan) / ip / TCP(sport=sport, dport=443, flags="A"))
    pk.append(eth(vlan) / ip / TCP(sport=sport, dport=443, flags="FA"))
    return pk


def dns(c):
    sport = random.randint(1024, 65535)
    return [eth() / IP(src=c, dst="198.51.100.53") / UDP(sport=sport, dport=53) / payload(random.randint(30, 60)),
            eth() / IP(src="198.51.100.53", dst=c) / UDP(sport=53, dport=sport) / payload(random.randint(60, 300))]


def other(c):
    kind = random.choice(["ping", "ntp", "ssh", "arp"])
    if kind == "ping":
        return [eth() / IP(src=c, dst=random.choice(SERVERS)) / ICMP(type=8) / payload(56)]
    if kind == "ntp":
        return [eth() / IP(src=c, dst="198.51.100.123") / UDP(sport=123, dport=123) / payload(48)]
    if kind == "ssh":
        return [eth() / IP(src=c, dst="203.0.113.22") / TCP(sport=random.randint(40000, 50000), dport=22, flags="PA") / payload(random.randint(40, 200))]
    return [eth() / ARP(psrc=c, pdst="192.0.2.1")]


def main():
    pkts = []
    while len(pkts) < 1000:
        r = random.random()
        if r < 0.45:
            pkts += https(random.choice(CLIENTS), random.choice(SERVERS), vlan=100 if random.random() < 0.2 else None)
        elif r < 0.6:
            pkts += https(random.choice(CLIENTS6), SERVER6, v6=True)
        elif r < 0.85:
            pkts += dns(random.choice(CLIENTS))
        else:
            pkts += other(random.choice(CLIENTS))
    pkts = pkts[:1000]
    t = 1_700_000_000 * 1_000_000
    with open(OUT, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for p in pkts:
            raw = bytes(p)
            t += random.randint(50, 2000)
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(raw), len(raw)) + raw)
    print(f"{OUT}: {len(pkts)} packets")


if __name__ == "__main__":
    main()
