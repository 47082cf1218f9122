#!/usr/bin/env python3
"""Writes a generated tar of about --gib GiB to stdout, for memory benchmarks.

Files of 1 KiB to 256 MiB; their bodies mix random bytes with repeated text,
so they neither compress to nothing nor dedup entirely. Deterministic per --seed.
"""
import argparse, io, random, sys, tarfile

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    total = int(a.gib * (1 << 30))
    out = sys.stdout.buffer
    written, i = 0, 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tf:
        while written < total:
            size = min(total - written, int(rnd.paretovariate(0.6) * 1024), 256 << 20)
            ti = tarfile.TarInfo(f"data/{i // 1000}/file{i}.bin")
            ti.size, ti.mtime = size, 1_700_000_000 + i
            tf.addfile(ti, Body(size, rnd.getrandbits(32)))
            written += size + 512
            i += 1

class Body(io.RawIOBase):
    """A file body produced on demand: random blocks and text blocks."""
    def __init__(self, size, seed):
        self.left, self.rnd = size, random.Random(seed)
    def readable(self):
        return True
    def readinto(self, b):
        n = min(len(b), self.left, 1 << 20)
        if n == 0:
            return 0
        if self.rnd.random() < 0.5:
            chunk = self.rnd.randbytes(n)
        else:
            line = b"strata benchmark line of moderately compressible text %d\n" % self.rnd.getrandbits(20)
            chunk = (line * (n // len(line) + 1))[:n]
        b[:n] = chunk
        self.left -= n
        return n

if __name__ == "__main__":
    main()
