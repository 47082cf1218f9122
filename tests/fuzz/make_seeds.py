#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/ (run from anywhere).

Each target's input begins with a few control bytes (see the target's doc
comment); the seeds put tar archives, their gzip and zstd forms, and index
records behind those. Needs python3, GNU tar, gzip, pigz and zstd.
"""
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
LIMIT = 64 << 10


def text(n, seed):
    words = [b"layer ", b"image ", b"the ", b"chunk ", b"store\n", b"fn ", b"{\n", b"}\n"]
    out, x = bytearray(), seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        out += words[x >> 61]
    return bytes(out[:n])


def add(tf, name, data, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 1700000000
    for k, v in kw.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(data))


def small_tar(fmt=tarfile.USTAR_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as tf:
        d = tarfile.TarInfo("etc/")
        d.type = tarfile.DIRTYPE
        d.mtime = 1700000000
        tf.addfile(d)
        add(tf, "etc/hostname", b"strata\n")
        add(tf, "usr/share/doc/readme.txt", text(3000, 1))
        add(tf, "usr/lib/libx.so", text(9000, 2))
        ln = tarfile.TarInfo("usr/lib/libx.so.1")
        ln.type = tarfile.SYMTYPE
        ln.linkname = "libx.so"
        tf.addfile(ln)
        add(tf, "empty", b"")
    return b.getvalue()


def pax_tar():
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "a/" + "long-directory-name/" * 8 + "file.txt", text(1500, 3))
        add(tf, "attrs", text(700, 4), pax_headers={"user.comment": "x" * 300, "SCHILY.xattr.user.k": "v"})
        add(tf, "ünïcode-name", text(513, 5))
    return b.getvalue()


def gnu_tar():
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as tf:
        add(tf, "g/" + "very-long-name-" * 12, text(2000, 6))
        add(tf, "short", text(100, 7))
    return b.getvalue()


def sparse_tars():
    """Old GNU sparse ('S' headers with extension blocks) and PAX sparse 1.0."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "sparse.img")
        with open(p, "wb") as f:
            # Nine data regions: more than the 4 an old GNU header holds, so
            # extension blocks follow it.
            for i in range(9):
                f.seek(i * 8192)
                f.write(text(300 + i, 10 + i))
            f.truncate(9 * 8192 + 4096)
        for name, args in [
            ("gnu-sparse.tar", ["--format=gnu"]),
            ("pax-sparse-1.0.tar", ["--format=pax", "--sparse-version=1.0"]),
        ]:
            out[name] = subprocess.run(
                ["tar", "-c", "-f", "-", "-S", *args, "--mtime=@1700000000", "--owner=0", "--group=0",
                 "-C", d, "sparse.img"],
                check=True, capture_output=True).stdout
    return out


def run(cmd, data):
    return subprocess.run(cmd, input=data, check=True, capture_output=True).stdout


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def page(segs):
    """A recipe page, before zstd: ('lit', bytes) or ('chunk', hash, len)."""
    head, lits = bytearray(varint(len(segs))), bytearray()
    for s in segs:
        if s[0] == "lit":
            head += varint(len(s[1]) << 1)
            lits += s[1]
        else:
            head += varint(s[2] << 1 | 1) + s[1]
    return bytes(head + lits)


def zlib_params(level, framing=0, block=None):
    b = bytes([1, level, 15, 8, 0, framing])
    return b + (struct.pack("<I", block) if block is not None else b"")


def plan(codec, diff_id, plain_size, parts):
    b = bytearray([1, codec])
    b += b"\x00" if diff_id is None else b"\x01" + diff_id
    b += varint(0 if plain_size is None else plain_size + 1)
    b += varint(len(parts))
    for p in parts:
        kind = p[0]
        if kind == "lit":
            b += b"\x00" + varint(len(p[1])) + p[1]
        elif kind == "replay":
            _, enc_kind, params, plain_len, out_len = p
            b += bytes([1, enc_kind]) + varint(len(params)) + params + varint(plain_len) + varint(out_len)
        elif kind == "preflate":
            b += b"\x02" + varint(len(p[1]))
            for pl, cl, ol in p[1]:
                b += varint(pl) + varint(cl) + varint(ol)
        else:
            _, stored_kind, ln, skip = p
            b += bytes([3, stored_kind]) + varint(ln) + varint(skip)
    return bytes(b)


def content(size, layout, page_starts, wrap=None):
    b = bytearray([2 if wrap else 1, layout])
    for v in [size, 1, 7, 1024, 300]:
        b += varint(v)
    b += varint(len(page_starts))
    prev = 0
    for s in page_starts:
        b += varint(s - prev)
        prev = s
    if wrap:
        codec, strategy, recipe_size, plain_size, raw_size, extra, diff_id, raw_starts = wrap
        b += bytes([codec, strategy])
        for v in [recipe_size, 0 if plain_size is None else plain_size + 1, raw_size, extra]:
            b += varint(v)
        b += b"\x00" if diff_id is None else b"\x01" + diff_id
        b += varint(len(raw_starts))
        prev = 0
        for s in raw_starts:
            b += varint(s - prev)
            prev = s
    return bytes(b)


def write(target, name, data):
    assert len(data) < LIMIT, (target, name, len(data))
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def codec_prefix(mode=0, level=0, at=0, val=0, seed=0, cfg=0, r1=0, r2=0):
    """The 14 control bytes of unwrap_codec and push_stream."""
    return bytes([mode, level]) + struct.pack("<HBIBHH", at, val, seed, cfg, r1, r2)


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    tars = {
        "ustar.tar": small_tar(),
        "pax.tar": pax_tar(),
        "gnu-longname.tar": gnu_tar(),
        **sparse_tars(),
    }
    tar = tars["ustar.tar"]
    packed = {
        "ustar.tar.gz": gzip.compress(tar, 6, mtime=0),
        "ustar.tar.gz9": gzip.compress(tar, 9, mtime=0),
        "pax.tar.pigz": run(["pigz", "-n", "-c"], tars["pax.tar"]),
        "ustar.tar.zst": run(["zstd", "-q", "-c", "-3"], tar),
        "gnu-sparse.tar.zst19": run(["zstd", "-q", "-c", "-19", "--no-check"], tars["gnu-sparse.tar"]),
        "two-members.gz": gzip.compress(b"first member\n", 6, mtime=0) + gzip.compress(tars["gnu-longname.tar"], 1, mtime=0),
        "padded.gz": gzip.compress(tar, 6, mtime=0) + bytes(512),
    }

    # split_tar: choice byte, 4 seed bytes, the stream.
    for i, (name, data) in enumerate({**tars, **packed}.items()):
        write("split_tar", name, bytes([i % 4]) + struct.pack("<I", 0x9E3779B9 * (i + 1) & 0xFFFFFFFF) + data)

    # unwrap_codec and push_stream: compressed files as they are (raw mode),
    # and tars wrapped by each mode, some damaged.
    for target in ["unwrap_codec", "push_stream"]:
        for i, (name, data) in enumerate(packed.items()):
            write(target, "raw-" + name, codec_prefix(0, 0, seed=i * 7 + 1, r1=100, r2=3000) + data)
        write(target, "raw-plain.tar", codec_prefix(0, seed=2) + tar)
        modes = [
            ("zlib6", 2, 5), ("zlib9", 2, 8), ("pigz6", 3, 5), ("pigz1-32k", 3, 0x90),
            ("flate2", 4, 6), ("zlib-rle", 5, 1), ("zstd3", 6, 2), ("zstd-sum-stream", 7, 0x85),
        ]
        for j, (name, mode, level) in enumerate(modes):
            write(target, f"wrap-{name}.tar", codec_prefix(mode, level, seed=j + 3, r1=600, r2=9000) + tar)
        for dmg, at, val in [(2, 5000, 0x40), (3, 3000, 0), (6, 0, 0), (6, 100, 1), (7, 10, 0x1F)]:
            write(target, f"wrap-zlib6-damage{dmg}-{at}.tar",
                  codec_prefix(2 | dmg << 3, 5, at=at, val=val, seed=11) + tar)
            write(target, f"wrap-zstd-damage{dmg}-{at}.tar",
                  codec_prefix(6 | dmg << 3, 2, at=at, val=val, seed=13) + tar)

    # decode_records: selector byte, the record.
    h1, h2 = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    pages = {
        "tar-page": page([("lit", tar[:512]), ("chunk", h1, 3000), ("lit", bytes(72) + tar[3584:4096]), ("chunk", h2, 9000)]),
        "empty-page": page([]),
        "literal-page": page([("lit", b"x" * 100)]),
    }
    for name, p in pages.items():
        write("decode_records", name, b"\x00" + p)
        write("decode_records", name + ".zst", b"\x01" + run(["zstd", "-q", "-c", "-3"], p))
    diff = hashlib.sha256(tar).digest()
    plans = {
        "plan-replay": plan(1, diff, len(tar), [
            ("lit", bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255])),
            ("replay", 1, zlib_params(6), len(tar), 2500),
            ("lit", b"\x01\x02\x03\x04\x05\x06\x07\x08")]),
        "plan-pigz": plan(1, None, None, [("replay", 1, zlib_params(9, 1, 131072), 10, 12)]),
        "plan-mixed": plan(2, None, None, [
            ("replay", 2, b"\x03", 100, 40), ("preflate", [(9, 2, 5), (100, 0, 30)]),
            ("stored", 1, 99, 3), ("stored", 0, 512, 0)]),
    }
    for name, p in plans.items():
        write("decode_records", name, b"\x02" + p)
    contents = {
        "content-tar": content(len(tar), 1, [0, 1 << 20, 1 << 33]),
        "content-gzip": content(2600, 1, [0], (1, 1, len(tar), len(tar), 0, 60, diff, [])),
        "content-stored": content(5000, 0, [0], (2, 3, 0, None, 5000, 5040, None, [0, 4000])),
    }
    for name, c in contents.items():
        write("decode_records", name, b"\x03" + c)


if __name__ == "__main__":
    main()
