#!/usr/bin/env python3
"""Helpers for benches/versions.sh: a series of successive versions of one
application layer, and what its near-duplicate files cost.

    versions.py build CACHE_DIR
        Builds (or reuses) the series: version N is Django 4.2.N-1 plus numpy
        from 2.1.0..2.2.5 (cp311 manylinux wheels from PyPI, cached), installed
        with `pip install --no-deps --target` into the same directory each time,
        byte-compiled with compileall (as a Dockerfile's `RUN pip install` leaves
        .pyc files next to the sources) and tarred in a deterministic order.
        Prints the layer tars' paths, one a line.

    versions.py analyze OUT_JSON TAR...
        For each tar against the one before it: files under the same path with
        other content (changed), files under new paths (added) and, among
        those, files renamed by the release (same stem once versions and
        hashes are blanked, other content). For the changed and renamed files,
        by type: plain bytes, `zstd -3` of each file alone, all of them
        concatenated in 4 MiB zstd -3 frames (nearer to strata's blocks),
        `zstd -3 --patch-from=PREV` and `zstd -19 --long=27 --patch-from=PREV`.

    versions.py report ANALYSIS_JSON FIGURES_JSON
        Prints the markdown report from the analysis and the figures that
        versions.sh measured (pushes, bytes at rest, borg, file reference).
"""
import collections
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from file_reference import zstd_frames  # noqa: E402

DJANGO = ["4.2"] + [f"4.2.{i}" for i in range(1, 10)]
NUMPY = ["2.1.0", "2.1.1", "2.1.2", "2.1.3", "2.2.0", "2.2.1", "2.2.2", "2.2.3", "2.2.4", "2.2.5"]
PYTAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
TYPES = (".pyc", ".py", ".so", "other")


def wheel(cache, name, version):
    """The cached wheel of name==version, downloaded from PyPI when missing."""
    d = os.path.join(cache, "wheels")
    os.makedirs(d, exist_ok=True)
    prefix = f"{name}-{version}-".lower()
    found = [f for f in os.listdir(d) if f.lower().startswith(prefix)]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary", ":all:", "-d", d, f"{name}=={version}"], check=True)
        found = [f for f in os.listdir(d) if f.lower().startswith(prefix)]
    if len(found) != 1:
        sys.exit(f"expected one wheel for {name}=={version} in {d}, found {found}")
    return os.path.join(d, found[0])


def build(cache):
    spec = f"django-{DJANGO[0]}..{DJANGO[-1]}+numpy-{NUMPY[0]}..{NUMPY[-1]}-{PYTAG}"
    out = os.path.join(cache, "layers", spec)
    tars = [os.path.join(out, f"v{i + 1:02d}.tar") for i in range(len(DJANGO))]
    if all(os.path.exists(t) for t in tars):
        print("\n".join(tars))
        return
    os.makedirs(out, exist_ok=True)
    # One install path for every version, so the .pyc files' co_filename
    # strings stay the same and only real changes (and mtimes) differ.
    app = os.path.join(cache, "build", "app")
    for dj, np_, tar in zip(DJANGO, NUMPY, tars):
        if os.path.exists(tar):
            continue
        shutil.rmtree(app, ignore_errors=True)
        os.makedirs(app)
        # --no-compile: pip would compile in its temporary directory and leave
        # that random path in every .pyc.
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--root-user-action=ignore", "--no-deps", "--no-index",
                        "--no-compile", "--target", app,
                        wheel(cache, "django", dj), wheel(cache, "numpy", np_)], check=True)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                        "--invalidation-mode", "timestamp", app], check=True)
        subprocess.run(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                        "-C", app, "-cf", tar + ".part", "."], check=True)
        os.rename(tar + ".part", tar)
    shutil.rmtree(app, ignore_errors=True)
    print("\n".join(tars))


def members(path):
    """path -> (offset_data, size, sha256) of every regular file of a tar."""
    files = {}
    with open(path, "rb") as raw, tarfile.open(path, "r:") as t:
        for m in t:
            if not m.isreg():
                continue
            raw.seek(m.offset_data)
            files[m.name] = (m.offset_data, m.size, hashlib.sha256(raw.read(m.size)).digest())
    return files


def kind(name):
    base = os.path.basename(name)
    if base.endswith(".pyc"):
        return ".pyc"
    if base.endswith(".py"):
        return ".py"
    if base.endswith(".so") or ".so." in base:
        return ".so"
    return "other"


def zstd_size(args, path):
    # stderr dropped: --patch-from at high levels prints tuning advice per file.
    return len(subprocess.run(["zstd", "-q", "-c", *args, path], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, check=True).stdout)


def measure(pair):
    """zstd figures of one changed file (paths of its previous and new body)."""
    prev, new = pair
    return {
        "zstd3": zstd_size(["-3"], new),
        "patch3": zstd_size(["-3", f"--patch-from={prev}"], new),
        "patch19": zstd_size(["-19", "--long=27", f"--patch-from={prev}"], new),
    }


def read(path, off, size):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(size)


def stem(path):
    """path with hashes and version numbers blanked: a file renamed by a
    release (numpy.libs/libscipy_openblas64_-HASH.so, NAME-VERSION.dist-info/)
    keeps its stem."""
    path = re.sub(r"(?=[0-9a-f]*[0-9])[0-9a-f]{8,}", "#", path)
    return re.sub(r"[0-9]+(\.[0-9]+)+", "#", path)


def near_dups(prev_tar, prev, tar, cur, pairs):
    """zstd figures by type for (old path, new path) pairs of differing bodies."""
    by = {t: collections.Counter() for t in TYPES}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        jobs, cats = [], []
        # By type, and the .pyc of unchanged code on their own.
        cat_files = {t: open(os.path.join(tmp, f"cat{t}"), "wb") for t in TYPES + ("same_code",)}
        for i, (old, new) in enumerate(pairs):
            a = read(prev_tar, prev[old][0], prev[old][1])
            b = read(tar, cur[new][0], cur[new][1])
            t = kind(new)
            c = by[t]
            c["count"] += 1
            c["bytes"] += len(b)
            # A .pyc whose code is unchanged: only the header's source mtime
            # (and size) differ, as after any reinstall.
            same_code = t == ".pyc" and a[16:] == b[16:]
            if same_code:
                c["header_only"] += 1
                c["header_only_bytes"] += len(b)
                cat_files["same_code"].write(b)
            pa, pb = os.path.join(tmp, f"{i}.a"), os.path.join(tmp, f"{i}.b")
            with open(pa, "wb") as f:
                f.write(a)
            with open(pb, "wb") as f:
                f.write(b)
            cat_files[t].write(b)
            jobs.append((pa, pb))
            cats.append(t)
        for f in cat_files.values():
            f.close()
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for t, r in zip(cats, pool.map(measure, jobs)):
                by[t].update(r)
        for t in TYPES:
            by[t]["zstd3_frames"] = zstd_frames(os.path.join(tmp, f"cat{t}"))
        by[".pyc"]["header_only_frames"] = zstd_frames(os.path.join(tmp, "catsame_code"))
    return {t: dict(c) for t, c in by.items()}


def analyze(out_json, tars):
    versions = []
    prev_tar, prev = None, None
    for n, tar in enumerate(tars, 1):
        cur = members(tar)
        v = {"version": n, "tar": tar, "tar_bytes": os.path.getsize(tar), "files": len(cur)}
        if prev is not None:
            changed = sorted(p for p in cur if p in prev and cur[p][2] != prev[p][2])
            added = sorted(p for p in cur if p not in prev)
            removed = [p for p in prev if p not in cur]
            # Renamed: one removed and one added path share a stem; pairs of
            # equal bodies cost a content-addressed store nothing.
            olds, news = collections.defaultdict(list), collections.defaultdict(list)
            for p in removed:
                olds[stem(p)].append(p)
            for p in added:
                news[stem(p)].append(p)
            renamed = sorted((olds[k][0], ps[0]) for k, ps in news.items()
                             if len(ps) == 1 and len(olds.get(k, ())) == 1
                             and prev[olds[k][0]][2] != cur[ps[0]][2])
            v["removed"] = len(removed)
            v["changed"] = near_dups(prev_tar, prev, tar, cur, [(p, p) for p in changed])
            v["renamed"] = near_dups(prev_tar, prev, tar, cur, renamed)
            # The added files alone in 4 MiB frames: what a new path costs
            # whatever the store.
            v["added"] = {"count": len(added), "bytes": sum(cur[p][1] for p in added)}
            with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR", "/var/tmp")) as f:
                for p in added:
                    f.write(read(tar, cur[p][0], cur[p][1]))
                f.flush()
                v["added"]["zstd3_frames"] = zstd_frames(f.name)
        versions.append(v)
        print(f"analyzed v{n:02d}", file=sys.stderr)
        prev_tar, prev = tar, cur
    with open(out_json, "w") as f:
        json.dump({"versions": versions}, f, indent=1)


def mib(n):
    return f"{n / 2**20:.2f}"


def pct(a, b):
    return f"{100 * a / b:.1f} %" if b else "–"


def report(analysis_json, figures_json):
    vs = json.load(open(analysis_json))["versions"]
    fg = json.load(open(figures_json))
    new_bytes = fg["new_bytes"]
    S = fg["strata_bytes"]
    later = [v for v in vs if "changed" in v]

    def tot(v, part, key):
        return sum(c.get(key, 0) for c in v[part].values())

    print("## Per version")
    print()
    print("changed: the same path as in the version before, other content; added: paths the")
    print("version before did not have, of which renamed: a removed path with the same stem once")
    print("version numbers and hashes are blanked (NAME-VERSION.dist-info/, numpy.libs/LIB-HASH.so),")
    print("other content. strata new: the push's `NEW-BYTES` (zstd -3 in 2 MiB blocks, before the")
    print("packs are densified). Last column: the changed and added files alone, zstd -3 in 4 MiB frames.")
    print()
    print("| version | tar MiB | files | strata new MiB | changed files | changed MiB | of which .pyc header-only | added files | added MiB | of which renamed | changed+added zstd MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v, nb in zip(vs, new_bytes):
        head = f"| v{v['version']:02d} | {mib(v['tar_bytes'])} | {v['files']} | {mib(nb)} |"
        if "changed" not in v:
            print(head + " – | – | – | – | – | – | – |")
            continue
        fr = tot(v, "changed", "zstd3_frames") + v["added"]["zstd3_frames"]
        print(f"{head} {tot(v, 'changed', 'count')} | {mib(tot(v, 'changed', 'bytes'))} | "
              f"{v['changed']['.pyc'].get('header_only', 0)} | {v['added']['count']} | "
              f"{mib(v['added']['bytes'])} | {tot(v, 'renamed', 'count')} | {mib(fr)} |")
    tars = sum(v["tar_bytes"] for v in vs)
    print(f"| **all** | {mib(tars)} | | {mib(sum(new_bytes))} | | | | | | | |")
    print()

    ref = fg["reference"]
    print(f"## All {len(vs)} layers stored")
    print()
    print("| store | bytes | MiB | × tars | × file-level reference |")
    print("|---|---:|---:|---:|---:|")
    rows = [("strata data dir (dense packs after `strata gc`, daemon stopped)", S),
            ("  of which packs", fg["strata_packs"]),
            ("  of which index", fg["strata_index"]),
            ("file-level reference (distinct bodies + headers, zstd -3 in 4 MiB frames)", ref["total"]),
            ("borg 1.2 repo (`-e none`, zstd,3)", fg["borg_bytes"])]
    for name, b in rows:
        print(f"| {name} | {b} | {mib(b)} | {b / tars:.4f} | {b / ref['total']:.3f} |")
    print()
    print(f"tars {tars} bytes; strata/borg {S / fg['borg_bytes']:.3f}; the reference holds "
          f"{ref['distinct_files']} distinct file bodies, {ref['plain_bodies']} plain bytes. "
          f"Bytes on disk by du -sb.")
    print()

    print(f"## Near-duplicates, v02..v{len(vs):02d}")
    print()
    print("Each near-duplicate compressed alone (`zstd -3`); those of a type concatenated in")
    print("4 MiB `zstd -3` frames (nearer to strata's blocks: small files gain context); and as")
    print("deltas on the previous version's file (`zstd -3 --patch-from=PREV`,")
    print("`zstd -19 --long=27 --patch-from=PREV`).")
    print()
    print("| near-duplicates | files | plain MiB | .pyc header-only | zstd -3 each MiB | zstd -3 frames MiB | patch-from -3 MiB | patch-from -19 MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    every = collections.Counter()

    def row(name, c):
        ho = f"{c['header_only']} ({mib(c['header_only_bytes'])} MiB)" if c["header_only"] else "–"
        print(f"| {name} | {c['count']} | {mib(c['bytes'])} | {ho} | {mib(c['zstd3'])} | "
              f"{mib(c['zstd3_frames'])} | {mib(c['patch3'])} | {mib(c['patch19'])} |")

    for part in ("changed", "renamed"):
        whole = collections.Counter()
        for t in TYPES:
            c = collections.Counter()
            for v in later:
                c.update(v[part][t])
            if c["count"]:
                row(f"{part} {t}", c)
            whole.update(c)
        row(f"**{part}, all**", whole)
        every.update(whole)
    row("**all near-duplicates**", every)
    print()
    # What strata paid for the near-duplicates: all it added after v01 less
    # the genuinely new files, scaled by what densifying then did to its packs
    # (push bytes are zstd -3; the packs at rest are denser).
    dense = fg["dense_ratio"]
    added = sum(new_bytes[1:])
    other = (sum(v["added"]["zstd3_frames"] for v in later)
             - sum(tot(v, "renamed", "zstd3_frames") for v in later))
    paid = (added - other) * dense
    print("What deltas on the previous version's files would save, against three baselines:")
    print("each near-duplicate compressed alone; all in 4 MiB frames; and what strata paid for")
    print(f"them: its pushes' bytes for v02..v{len(vs):02d} less the other added files (in frames),")
    print(f"× {dense:.3f} (what densifying did to its packs). The first two are zstd -3 figures set")
    print("against strata's dense packs, so their shares of its data dir run high.")
    print()
    print("| baseline | bytes | saved by patch-from -3 | saved by patch-from -19 | -3 saving / strata data dir | -19 saving / strata data dir |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, base in (("zstd -3, each file", every["zstd3"]),
                       ("zstd -3, 4 MiB frames", every["zstd3_frames"]),
                       ("strata, as paid (estimate)", round(paid))):
        s3, s19 = base - every["patch3"], base - every["patch19"]
        share = "– | –" if name.endswith("each file") else f"{pct(s3, S)} | {pct(s19, S)}"
        print(f"| {name} | {base} | {s3} ({pct(s3, base)}) | {s19} ({pct(s19, base)}) | {share} |")
    print()
    s3, s19 = paid - every["patch3"], paid - every["patch19"]
    print(f"With deltas strata's data dir would be about {mib(S - s3)} MiB (-3) or {mib(S - s19)} MiB (-19) "
          f"instead of {mib(S)} MiB ({S / (S - s3):.1f}× or {S / (S - s19):.1f}× smaller).")
    print()
    nd = every["zstd3_frames"]
    ho = sum(v["changed"][".pyc"].get("header_only_bytes", 0) for v in later)
    hz = sum(v["changed"][".pyc"].get("header_only_frames", 0) for v in later)
    print(f"strata added {added} bytes ({mib(added)} MiB) for v02..v{len(vs):02d} (push NEW-BYTES); the "
          f"near-duplicates alone in zstd -3 frames are {nd} ({pct(nd, added)} of that), the other added "
          f"files {other} ({pct(other, added)}). The .pyc whose code did not change ({mib(ho)} MiB plain) "
          f"differ from the previous version's only in their 16-byte header (the source's mtime); "
          f"in zstd -3 frames they are {hz} bytes ({mib(hz)} MiB, {pct(hz * dense, S)} of strata's data dir "
          f"once scaled × {dense:.3f}).")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "build" and len(args) == 1:
        build(args[0])
    elif cmd == "analyze" and len(args) >= 2:
        analyze(args[0], args[1:])
    elif cmd == "report" and len(args) == 2:
        report(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
