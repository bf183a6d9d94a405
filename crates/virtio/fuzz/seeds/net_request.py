#!/usr/bin/env python3
"""Hand-built starting inputs for the net_request fuzz target.

Writes a few inputs into the directory given (corpus/net_request by
default) that already carry well-formed chains: a transmit frame, receive
buffers, and control commands, among them VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
whose class and command bytes the fuzzer does not find on its own in
minutes. The layout is the one fuzz_targets/common.rs builds: a 10-byte
header, then guest memory from address 0, the available ring at 2.
"""

import os
import struct
import sys

NEXT, WRITE = 1, 2
MQ, VQ_PAIRS_SET = 4, 0


def ring(size):
    """(descriptor table, available ring) addresses for a queue of size."""
    avail = 2
    desc = -(-(avail + 6 + 2 * size) // 16) * 16
    return desc, avail


def image(size, heads, descs, data, mergeable=False, frame_len=0, seed=0):
    """An input: queue `size`, the chains at `heads` available, descriptors
    (addr, len, flags, next), and `data` as {guest address: bytes}."""
    desc_at, avail = ring(size)
    mem = bytearray(0x400)
    struct.pack_into("<HH", mem, avail, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, avail + 4 + 2 * i, h)
    for i, d in enumerate(descs):
        struct.pack_into("<QIHH", mem, desc_at + 16 * i, *d)
    for addr, b in data.items():
        mem[addr:addr + len(b)] = b
    spec = (frame_len & 0x1FFFF) | (seed << 24)
    header = bytes([size.bit_length() - 1, 1 if mergeable else 0]) + struct.pack("<Q", spec)
    return header + bytes(mem)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "corpus/net_request"
    os.makedirs(out, exist_ok=True)
    seeds = {
        # Transmit: a header and a 52-byte frame in one descriptor.
        "tx": image(4, [0], [(0x100, 64, 0, 0)], {0x100: bytes(range(64))}),
        # Receive: two 32-byte buffers, mergeable, a 50-byte frame.
        "rx": image(4, [0, 1], [(0x200, 32, WRITE, 0), (0x300, 32, WRITE, 0)], {},
                    mergeable=True, frame_len=50, seed=7),
        # Control: set 2 queue pairs; command and status in two descriptors.
        "ctrl_pairs": image(4, [0], [(0x100, 4, NEXT, 1), (0x110, 1, WRITE, 0)],
                            {0x100: bytes([MQ, VQ_PAIRS_SET, 2, 0])}),
        # One of each in one ring: control (0 -> 1), transmit (2), receive (3).
        "mixed": image(4, [0, 2, 3],
                       [(0x100, 4, NEXT, 1), (0x110, 1, WRITE, 0),
                        (0x140, 40, 0, 0), (0x200, 64, WRITE, 0)],
                       {0x100: bytes([MQ, VQ_PAIRS_SET, 1, 0]), 0x140: bytes(range(40))},
                       frame_len=80, seed=3),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, f"seed-{name}"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
