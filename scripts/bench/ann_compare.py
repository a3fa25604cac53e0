#!/usr/bin/env python3
"""Compare `memwal bench ann` with hnswlib on the same data, in one run.

Makes a seeded clustered data set (Gaussian clusters, float32), 1,000 queries from the same
distribution and the exact L2 ground truth (numpy brute force in chunks), writes them as TEXMEX
.fvecs/.ivecs files, builds hnswlib with the same M and efConstruction on every core, measures
recall@10 and single-thread QPS per ef, resident memory per vector and save/load time, runs
`memwal bench ann --json` on the same files, and prints both with the ratios that
docs/benchmarks.md reports (build time, QPS at equal recall, memory per vector, load time).

    python3 scripts/bench/ann_compare.py [DIR] [--memwal .build/release/memwal] [--n 100000]
        [--dim 384] [--queries 1000] [--m 16] [--ef-construction 200] [--ef 16,32,64,128,256]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time


def ensure_packages():
    try:
        import hnswlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "hnswlib", "numpy"])


def package_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - the version is only printed
        return "?"


def resident_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def write_vecs(path, array, dtype):
    import numpy as np

    rows, dim = array.shape
    out = np.empty((rows, dim + 1), dtype=dtype)
    out[:, 0] = np.array(dim, dtype=np.int32).view(dtype)
    out[:, 1:] = array.astype(dtype)
    out.tofile(path)


def make_data(args):
    """Writes base.fvecs, queries.fvecs and groundtruth.ivecs unless the same set is there."""
    import numpy as np

    os.makedirs(args.dir, exist_ok=True)
    meta_path = os.path.join(args.dir, "meta.json")
    meta = {"n": args.n, "dim": args.dim, "queries": args.queries, "seed": args.seed,
            "clusters": args.clusters, "spread": args.spread, "truth": 100}
    paths = {name: os.path.join(args.dir, name) for name in ("base.fvecs", "queries.fvecs", "groundtruth.ivecs")}
    if os.path.exists(meta_path) and all(os.path.exists(p) for p in paths.values()):
        with open(meta_path) as existing:
            if json.load(existing) == meta:
                print(f"data: reusing {args.dir}", flush=True)
                return paths
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    centres = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)

    def sample(count):
        which = rng.integers(0, args.clusters, size=count)
        noise = rng.normal(scale=args.spread, size=(count, args.dim)).astype(np.float32)
        return centres[which] + noise

    base = sample(args.n)
    queries = sample(args.queries)
    truth_k = min(100, args.n)
    truth = np.empty((args.queries, truth_k), dtype=np.int32)
    base_norms = (base.astype(np.float64) ** 2).sum(axis=1)
    for start in range(0, args.queries, 100):
        chunk = queries[start:start + 100].astype(np.float64)
        # ‖q − x‖² = ‖q‖² − 2 q·x + ‖x‖², in float64 so that ties are rare and exact.
        distances = (chunk ** 2).sum(axis=1)[:, None] - 2 * chunk @ base.astype(np.float64).T + base_norms[None, :]
        nearest = np.argpartition(distances, truth_k - 1, axis=1)[:, :truth_k]
        order = np.take_along_axis(distances, nearest, axis=1).argsort(axis=1, kind="stable")
        truth[start:start + 100] = np.take_along_axis(nearest, order, axis=1)
    write_vecs(paths["base.fvecs"], base, np.float32)
    write_vecs(paths["queries.fvecs"], queries, np.float32)
    write_vecs(paths["groundtruth.ivecs"], truth, np.int32)
    with open(meta_path, "w") as out:
        json.dump(meta, out)
    print(f"data: {args.n} x {args.dim} in {args.clusters} clusters, {args.queries} queries, "
          f"exact top-{truth_k}, {time.perf_counter() - started:.1f} s", flush=True)
    return paths


def read_vecs(path, dtype):
    import numpy as np

    raw = np.fromfile(path, dtype=np.int32)
    dim = int(raw[0])
    return raw.reshape(-1, dim + 1)[:, 1:].view(dtype).copy()


def run_hnswlib(args, paths, efs):
    import hnswlib
    import numpy as np

    base = read_vecs(paths["base.fvecs"], np.float32)
    queries = read_vecs(paths["queries.fvecs"], np.float32)
    truth = read_vecs(paths["groundtruth.ivecs"], np.int32)[:, :10]
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    before = resident_bytes()
    index.init_index(max_elements=base.shape[0], ef_construction=args.ef_construction, M=args.m, random_seed=100)
    index.set_num_threads(args.threads)
    started = time.perf_counter()
    index.add_items(base, np.arange(base.shape[0]))
    build = time.perf_counter() - started
    per_vector = (resident_bytes() - before) / base.shape[0]
    index.set_num_threads(1)
    runs = []
    for ef in efs:
        index.set_ef(ef)
        index.knn_query(queries[:100], k=10)
        started = time.perf_counter()
        labels, _ = index.knn_query(queries, k=10)
        elapsed = time.perf_counter() - started
        found = sum(len(set(row) & set(expected)) for row, expected in zip(labels.tolist(), truth.tolist()))
        runs.append({"ef": ef, "recall_at_10": found / (10 * len(queries)), "qps": len(queries) / elapsed})
    path = os.path.join(args.dir, "hnswlib.bin")
    started = time.perf_counter()
    index.save_index(path)
    save = time.perf_counter() - started
    size = os.path.getsize(path)
    del index
    started = time.perf_counter()
    loaded = hnswlib.Index(space="l2", dim=base.shape[1])
    loaded.load_index(path, max_elements=base.shape[0])
    load = time.perf_counter() - started
    os.remove(path)
    return {"build_seconds": build, "resident_bytes_per_vector": per_vector, "runs": runs,
            "snapshot_bytes": size, "serialize_seconds": save, "load_seconds": load,
            "version": package_version("hnswlib")}


def run_memwal(args, paths):
    command = [args.memwal, "bench", "ann", "--base", paths["base.fvecs"], "--queries", paths["queries.fvecs"],
               "--groundtruth", paths["groundtruth.ivecs"], "--m", str(args.m), "--ef-construction",
               str(args.ef_construction), "--ef", args.ef, "--threads", str(args.threads), "--json"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def qps_at(runs, recall):
    """QPS at `recall`, interpolating log(QPS) linearly between the measured ef points."""
    points = sorted((run["recall_at_10"], run["qps"]) for run in runs)
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= recall <= r1:
            if r1 == r0:
                return max(q0, q1)
            t = (recall - r0) / (r1 - r0)
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
    for r, q in points:
        if r == recall:
            return q
    return None


def report(args, hnsw, memwal):
    print()
    print(f"{args.n} x {args.dim} L2, {args.queries} queries, M {args.m}, efConstruction {args.ef_construction}, "
          f"{args.threads} build threads; hnswlib {hnsw['version']}")
    print(f"{'':28}{'hnswlib':>12}{'memwal':>12}{'ratio':>9}   target")
    rows = [
        ("build seconds", hnsw["build_seconds"], memwal["build_seconds"], "memwal/hnswlib <= 1.5"),
        ("resident bytes per vector", hnsw["resident_bytes_per_vector"], memwal["resident_bytes_per_vector"],
         "memwal/hnswlib <= 1.3"),
        ("snapshot bytes", hnsw["snapshot_bytes"], memwal["snapshot_bytes"], ""),
        ("save seconds", hnsw["serialize_seconds"], memwal["serialize_seconds"], ""),
        ("load seconds", hnsw["load_seconds"], memwal["load_seconds"], "memwal <= 2 s"),
    ]
    summary = {}
    for name, theirs, ours, target in rows:
        ratio = ours / theirs if theirs else float("nan")
        summary[name] = {"hnswlib": theirs, "memwal": ours, "ratio": ratio}
        print(f"{name:28}{theirs:12.3f}{ours:12.3f}{ratio:9.3f}   {target}")
    print()
    print(f"{'ef':>6}{'hnswlib recall':>16}{'QPS':>10}{'memwal recall':>16}{'QPS':>10}")
    for theirs, ours in zip(hnsw["runs"], memwal["runs"]):
        print(f"{theirs['ef']:6}{theirs['recall_at_10']:16.4f}{theirs['qps']:10.0f}"
              f"{ours['recall_at_10']:16.4f}{ours['qps']:10.0f}")
    print()
    print(f"{'recall@10':>10}{'hnswlib QPS':>14}{'memwal QPS':>14}{'ratio':>9}   (target >= 0.7; interpolated)")
    levels = sorted({0.9, 0.95, 0.98, 0.99} | {round(run["recall_at_10"], 4) for run in memwal["runs"]})
    summary["qps_at_recall"] = []
    for level in levels:
        theirs, ours = qps_at(hnsw["runs"], level), qps_at(memwal["runs"], level)
        if theirs is None or ours is None:
            continue
        summary["qps_at_recall"].append({"recall": level, "hnswlib": theirs, "memwal": ours, "ratio": ours / theirs})
        print(f"{level:10.4f}{theirs:14.0f}{ours:14.0f}{ours / theirs:9.3f}")
    with open(os.path.join(args.dir, "compare.json"), "w") as out:
        json.dump({"hnswlib": hnsw, "memwal": memwal, "summary": summary}, out, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", default="/tmp/memwal-ann", help="where the data files go")
    parser.add_argument("--memwal", default=".build/release/memwal", help="the memwal binary")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--spread", type=float, default=1.0, help="noise sigma around each centre (centres ~ N(0,1))")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef", default="16,32,64,128,256")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-hnswlib", action="store_true", help="run only memwal (prints its JSON)")
    args = parser.parse_args()
    if not os.access(args.memwal, os.X_OK):
        sys.exit(f"{args.memwal} is not an executable; build it with `swift build -c release` first")
    ensure_packages()
    paths = make_data(args)
    efs = [int(value) for value in args.ef.split(",")]
    if args.skip_hnswlib:
        print(json.dumps(run_memwal(args, paths), indent=1))
        return
    hnsw = run_hnswlib(args, paths, efs)
    print(f"hnswlib: build {hnsw['build_seconds']:.2f} s", flush=True)
    memwal = run_memwal(args, paths)
    print(f"memwal: build {memwal['build_seconds']:.2f} s", flush=True)
    report(args, hnsw, memwal)


if __name__ == "__main__":
    main()
