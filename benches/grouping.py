#!/usr/bin/env python3
"""Would grouping similar content, or long-distance matching, shrink the packs?

Reads the distinct file bodies of a set of layer tars the way
benches/file_reference.py does (tarfile members, each regular body read
straight from the tar at offset_data, dedup by sha256, first occurrence =
arrival order), then lays them out in several orders, cuts the concatenation
into independent 2 MiB blocks (strata's block size) and compresses each block
with the `zstd` CLI, one thread. Bodies are whole deduplicated files, not
FastCDC chunks: a good proxy, since strata's blocks hold a file's new chunks
in file order, so a block's content is nearly the same run of bytes.

Variants (all 2 MiB independent blocks unless said):
  arrival-l3        arrival order, zstd -3 (ingest's setting), reference
  arrival-l9        arrival order, zstd -9 (dense packs' setting): BASELINE
  ext-l9            stable sort by extension, then arrival
  ext-name-l9       sort by (extension, basename), then arrival
  ext-sketch-l9     sort by (extension, min-hash of the 4 KiB-aligned pieces of
                    the first 64 KiB); bodies under 4 KiB keep arrival order
                    ahead of the sketched ones within their extension
  arrival-l9-long   arrival order, zstd -9 --long (ldm in each block)
  stream-l9         arrival order, one stream, zstd -9 (no blocks), reference
  stream-l9-long27  arrival order, one stream, zstd -9 --long=27: how much
                    cross-block redundancy exists at all (an upper bound, not
                    a layout that allows random reads)

For every block layout it also counts read cost: for each layer, the distinct
blocks its regular files (including those deduplicated against an earlier
layer) land in, summed over layers; every block touched is decompressed whole.

    nice -n 5 benches/grouping.py [--only V1,V2] TAR...   prints a table + JSON

Needs Python 3 (standard library only) and the zstd CLI. Runs with -T1.
"""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

BLOCK = 2 << 20
SKETCH_PIECE = 4 << 10
SKETCH_SPAN = 64 << 10
VARIANTS = ["arrival-l3", "arrival-l9", "ext-l9", "ext-name-l9",
            "ext-sketch-l9", "arrival-l9-long", "stream-l9",
            "stream-l9-long27"]
BASELINE = "arrival-l9"


def extension(name):
    """Lower-case extension of a basename; shared-library version tails
    (libfoo.so.6.0.1) count as "so", none is ""."""
    parts = name.lower().split(".")
    if len(parts) < 2 or (len(parts) == 2 and parts[0] == ""):
        return ""
    if "so" in parts[1:]:
        return "so"
    return parts[-1]


def sketch(body):
    """Min over the 4 KiB-aligned pieces of the first 64 KiB of an 8-byte
    blake2b of each piece; None below 4 KiB."""
    head = body[:SKETCH_SPAN]
    best = None
    for i in range(0, len(head) - SKETCH_PIECE + 1, SKETCH_PIECE):
        h = hashlib.blake2b(head[i:i + SKETCH_PIECE], digest_size=8).digest()
        if best is None or h < best:
            best = h
    return best


def read_corpus(tars, bodies_path):
    """Writes the distinct bodies in arrival order to bodies_path; returns
    (bodies, layers): bodies[i] = (offset, size, ext, basename, sketch),
    layers[j] = set of body ids layer j's regular files use."""
    index = {}
    bodies = []
    layers = []
    pos = 0
    with open(bodies_path, "wb") as out:
        for path in tars:
            used = set()
            with open(path, "rb") as raw, tarfile.open(path, "r:") as t:
                for m in t:
                    if not m.isreg() or m.size == 0:
                        continue
                    raw.seek(m.offset_data)
                    body = raw.read(m.size)
                    h = hashlib.sha256(body).digest()
                    i = index.get(h)
                    if i is None:
                        i = index[h] = len(bodies)
                        base = os.path.basename(m.name.rstrip("/"))
                        bodies.append((pos, len(body), extension(base), base,
                                       sketch(body)))
                        out.write(body)
                        pos += len(body)
                    used.add(i)
            layers.append(used)
    return bodies, layers


def order(variant, bodies):
    ids = range(len(bodies))
    if variant.startswith("ext-name"):
        return sorted(ids, key=lambda i: (bodies[i][2], bodies[i][3]))
    if variant.startswith("ext-sketch"):
        return sorted(ids, key=lambda i: (bodies[i][2], bodies[i][4] is not None,
                                          bodies[i][4] or b""))
    if variant.startswith("ext"):
        return sorted(ids, key=lambda i: bodies[i][2])
    return list(ids)


def zstd_args(variant):
    level = "-3" if variant.endswith("l3") else "-9"
    args = ["zstd", level, "-T1", "-q", "-c"]
    if variant.endswith("long27"):
        args.append("--long=27")
    elif variant.endswith("long"):
        args.append("--long")
    return args


def blocks(variant, bodies, layers, bodies_path):
    """Compressed bytes of `variant`'s layout in independent 2 MiB blocks,
    and the sum over layers of distinct blocks touched."""
    args = zstd_args(variant)
    first_block = [0] * len(bodies)
    last_block = [0] * len(bodies)
    total = nblocks = 0
    buf = bytearray()
    placed = 0

    def flush(piece):
        nonlocal total, nblocks
        total += len(subprocess.run(args, input=piece, stdout=subprocess.PIPE,
                                    check=True).stdout)
        nblocks += 1

    with open(bodies_path, "rb") as f:
        for i in order(variant, bodies):
            off, size = bodies[i][0], bodies[i][1]
            first_block[i] = placed // BLOCK
            last_block[i] = (placed + size - 1) // BLOCK
            placed += size
            f.seek(off)
            buf += f.read(size)
            while len(buf) >= BLOCK:
                flush(bytes(buf[:BLOCK]))
                del buf[:BLOCK]
    if buf:
        flush(bytes(buf))
    touched = []
    for used in layers:
        s = set()
        for i in used:
            s.update(range(first_block[i], last_block[i] + 1))
        touched.append(len(s))
    return {"bytes": total, "blocks": nblocks,
            "layer_blocks_sum": sum(touched), "layer_blocks": touched}


def stream(variant, bodies_path):
    with open(bodies_path, "rb") as f:
        out = subprocess.run(zstd_args(variant), stdin=f,
                             stdout=subprocess.PIPE, check=True).stdout
    return {"bytes": len(out)}


def main(argv):
    only = VARIANTS
    if argv[:1] == ["--only"]:
        only = argv[1].split(",")
        argv = argv[2:]
    if not argv:
        sys.exit(__doc__)
    tars = argv
    results = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        bodies_path = os.path.join(tmp, "bodies")
        bodies, layers = read_corpus(tars, bodies_path)
        plain = sum(b[1] for b in bodies)
        print(f"# {len(bodies)} distinct bodies, {plain} plain bytes, "
              f"{len(tars)} layers, read in {time.time() - t0:.0f} s",
              file=sys.stderr, flush=True)
        for v in only:
            t = time.time()
            if v.startswith("stream"):
                results[v] = stream(v, bodies_path)
            else:
                results[v] = blocks(v, bodies, layers, bodies_path)
            results[v]["seconds"] = round(time.time() - t, 1)
            print(f"# {v}: {results[v]['bytes']} in {results[v]['seconds']} s",
                  file=sys.stderr, flush=True)
    base = results.get(BASELINE, {}).get("bytes")
    print(f"{'variant':18} {'bytes':>14} {'vs base':>8} {'layer blocks':>13}")
    for v, r in results.items():
        ratio = f"{r['bytes'] / base:.4f}" if base else "-"
        lb = r.get("layer_blocks_sum", "")
        print(f"{v:18} {r['bytes']:>14} {ratio:>8} {lb:>13}")
    print(json.dumps({
        "layers": [os.path.basename(t) for t in tars],
        "distinct_files": len(bodies),
        "plain_bodies": plain,
        "block": BLOCK,
        "baseline": BASELINE,
        "results": results,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
