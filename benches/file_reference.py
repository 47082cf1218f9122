#!/usr/bin/env python3
"""The file-level reference of a set of layer tars: what an ideal file-level
deduplicating store would keep. Every distinct file body (by sha256) once,
concatenated and compressed with `zstd -3` in 4 MiB frames, plus every tar
header block compressed the same way. strata's data directory is measured
against this (benches/corpus.sh).

    benches/file_reference.py TAR...      prints JSON: bodies, headers, total

Uses Python's tarfile to find the members and reads each body straight from
the tar (offset_data), so sparse members count as their stored bytes.
"""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

FRAME = 4 << 20


def zstd_frames(path):
    """Bytes of `path` compressed by zstd -3 in independent 4 MiB frames."""
    total = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(FRAME)
            if not piece:
                return total
            out = subprocess.run(["zstd", "-3", "-q", "-c"], input=piece,
                                 stdout=subprocess.PIPE, check=True).stdout
            total += len(out)


def main(tars):
    seen = set()
    plain_bodies = plain_headers = 0
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        bodies = os.path.join(tmp, "bodies")
        headers = os.path.join(tmp, "headers")
        with open(bodies, "wb") as bo, open(headers, "wb") as ho:
            for path in tars:
                with open(path, "rb") as raw, tarfile.open(path, "r:") as t:
                    for m in t:
                        # Everything between the last body's end and this
                        # body: the member's header blocks (PAX, long names).
                        raw.seek(m.offset)
                        head = raw.read(m.offset_data - m.offset)
                        ho.write(head)
                        plain_headers += len(head)
                        if not m.isreg() or m.size == 0:
                            continue
                        raw.seek(m.offset_data)
                        body = raw.read(m.size)
                        h = hashlib.sha256(body).digest()
                        if h in seen:
                            continue
                        seen.add(h)
                        bo.write(body)
                        plain_bodies += len(body)
        b = zstd_frames(bodies)
        h = zstd_frames(headers)
    print(json.dumps({
        "distinct_files": len(seen),
        "plain_bodies": plain_bodies,
        "plain_headers": plain_headers,
        "bodies": b,
        "headers": h,
        "total": b + h,
    }))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
