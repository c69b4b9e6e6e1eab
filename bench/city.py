#!/usr/bin/env python3
"""The city service's hour update at city scale, with DuckDB as the peer in the same run.

`medfed city bench` builds the rules engine for N consenting residents across 25 districts
(category shares roughly Korea's), then runs one hour in which every district is in a PM2.5
warning (the worst case: every sensitive resident gets a message), and the next hour (nothing new).
It writes the residents as Parquet; DuckDB then computes the same hour's messages from that file
(residents whose category bits meet the PM2.5 rule's), and the two counts must agree.

    cargo build --release
    pip install duckdb
    python3 bench/city.py [--persons 10000000]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "medfed"))
    ap.add_argument("--persons", type=int, default=10_000_000)
    ap.add_argument("--outbox", action="store_true", help="also commit the hour's messages to a SQLite outbox")
    a = ap.parse_args()
    import duckdb

    with tempfile.TemporaryDirectory() as d:
        args = [a.exe, "city", "bench", "--persons", str(a.persons), "--parquet", d]
        if a.outbox:
            args += ["--outbox", d]
        t = time.perf_counter()
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - t
        print(out.strip())
        r = json.loads(out.strip().splitlines()[-1])
        con = duckdb.connect()
        t = time.perf_counter()
        con.execute(f"CREATE TABLE residents AS SELECT * FROM read_parquet('{d}/residents.parquet')")
        load = time.perf_counter() - t
        t = time.perf_counter()
        n = con.execute(
            "SELECT count(*) FROM residents r JOIN (SELECT DISTINCT district FROM residents) h USING (district) "
            f"WHERE (r.mask & {r['pm25_rule_mask']}) <> 0"
        ).fetchone()[0]
        q = time.perf_counter() - t
        print(f"medfed: {r['persons']:,} residents loaded in {r['load_s']:.1f} s; hour update {r['update_s']:.2f} s "
              f"({r['messages']:,} messages), next hour {r['repeat_s']:.2f} s; peak RSS {r['rss_peak_mb']:.0f} MB; process wall {wall:.1f} s")
        print(f"DuckDB {duckdb.__version__}: load {load:.2f} s, the same hour's messages {n:,} in {q:.2f} s")
        assert n == r["messages"], (n, r["messages"])
        print(f"counts agree; hour update medfed/DuckDB = {r['update_s'] / q:.2f}")


if __name__ == "__main__":
    main()
