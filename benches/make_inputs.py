#!/usr/bin/env python3
"""Writes the scripts/bench inputs: Ethernet/IPv4/UDP frames, 10 % of them to UDP port 443 (what
the selective filter keeps). `64.pcap`: 4096 frames of 64 bytes. `mixed.pcap`: 200,000 frames
(74 MB, larger than the CPU caches, as live traffic is) of an IMIX-like mix of 64, 576 and 1500
bytes (7:4:1). Standard library only."""
import struct
import sys

def frame(i, size):
    dport = 443 if i % 10 == 0 else 53
    ip_len = size - 14
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 0, (i >> 8) & 0xFF, i & 0xFF]), bytes([192, 168, 0, i % 7]))
    udp = struct.pack("!HHHH", 1024 + i % 5000, dport, ip_len - 20, 0)
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    f = eth + ip + udp
    return f + bytes(size - len(f))

def write(path, sizes):
    with open(path, "wb") as w:
        w.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, size in enumerate(sizes):
            f = frame(i, size)
            w.write(struct.pack("<IIII", 1_700_000_000, i, len(f), len(f)) + f)

out = sys.argv[1]
write(f"{out}/64.pcap", [64] * 4096)
imix = [64] * 7 + [576] * 4 + [1500]
write(f"{out}/mixed.pcap", [imix[i % len(imix)] for i in range(200_000)])
