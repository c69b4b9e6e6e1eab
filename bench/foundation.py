#!/usr/bin/env python3
"""Foundation benchmarks: synth throughput and memory, import throughput, and local SQL against DuckDB.

Runs the peer (DuckDB, PyPI `duckdb`) in the same run on the same Parquet files and prints a Markdown
table for docs/BENCHMARKS.md.

    python3 bench/foundation.py --persons 1000000 --work /tmp/medfed-bench
"""
import argparse, json, os, platform, re, resource, shutil, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def medfed_bin():
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/medfed-target"))
    return str(Path(target) / "release" / "medfed")


def timed(cmd, **kw):
    """Run cmd; return (seconds, peak RSS in MiB of the child, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    rss_kib = int(p.stderr.strip().splitlines()[-1])
    return dt, rss_kib / 1024, p.stdout


def total_rows(site_dirs):
    n = 0
    for d in site_dirs:
        text = (d / "site.toml").read_text()
        for m in re.finditer(r'\[files\."cdm/[a-z_]+\.parquet"\]\s*rows = (\d+)', text):
            n += int(m.group(1))
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/medfed-bench")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reuse", help="existing population folder: skip the synth and import benchmarks")
    a = ap.parse_args()
    import duckdb

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mf = medfed_bin()
    rows = []
    if a.reuse:
        pop = Path(a.reuse)
        sites = sorted(p for p in pop.iterdir() if p.is_dir())
    else:
        pop = work / "pop"
        synth_and_import(a, mf, pop, work, rows, duckdb)
        sites = sorted(p for p in pop.iterdir() if p.is_dir())
    site = max(sites, key=lambda d: (d / "cdm/measurement.parquet").stat().st_size)
    sql_vs_duckdb(a, mf, site, rows, duckdb)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"Machine: {os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PAGE_SIZE')*os.sysconf('SC_PHYS_PAGES')/2**30:.0f} GiB; "
          f"DuckDB {duckdb.__version__}; {time.strftime('%Y-%m-%d')}\n")
    print("| benchmark | input | time | throughput | peak memory | ratio vs peer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def synth_and_import(a, mf, pop, work, rows, duckdb):
    dt, rss, _ = timed([mf, "synth", "--persons", str(a.persons), "--out", str(pop), "--genotyped-share", "0.05"])
    sites = sorted(p for p in pop.iterdir() if p.is_dir())
    nrows = total_rows(sites)
    rows.append(("synth", f"{a.persons:,} persons, 6 hospitals, 5% genotyped x 10k SNPs", f"{dt:.1f} s",
                 f"{a.persons/dt:,.0f} persons/s; {nrows/dt:,.0f} CDM rows/s ({nrows:,} rows)", f"{rss:,.0f} MiB", "—"))
    # 2. import: export the largest site to OMOP CSV with DuckDB, import it with medfed.
    site = max(sites, key=lambda d: (d / "cdm/measurement.parquet").stat().st_size)
    csv_dir = work / "csv"
    csv_dir.mkdir()
    con = duckdb.connect()
    for t in ["person", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
              "measurement", "observation", "death", "payer_plan_period", "condition_era", "drug_era", "concept",
              "concept_ancestor", "location", "care_site"]:
        con.execute(f"COPY (SELECT * FROM read_parquet('{site}/cdm/{t}.parquet')) TO '{csv_dir}/{t}.csv' (HEADER, DELIMITER ',')")
    csv_rows = sum(sum(1 for _ in open(f)) - 1 for f in csv_dir.glob("*.csv"))
    csv_bytes = sum(f.stat().st_size for f in csv_dir.glob("*.csv"))
    dt, rss, _ = timed([mf, "import", "--cdm", str(csv_dir), "--out", str(work / "imported")])
    rows.append(("import", f"{site.name} as OMOP CSV ({csv_rows:,} rows, {csv_bytes/2**20:,.0f} MiB)", f"{dt:.1f} s",
                 f"{csv_rows/dt:,.0f} rows/s", f"{rss:,.0f} MiB", "—"))


def sql_vs_duckdb(a, mf, site, rows, duckdb):
    """Count distinct persons by concept: medfed sql (DataFusion) vs DuckDB on the same Parquet."""
    q = "SELECT condition_concept_id, COUNT(DISTINCT person_id) AS persons FROM condition_occurrence GROUP BY 1 ORDER BY 1"
    ours, theirs = [], []
    out_ours = None
    for _ in range(a.repeat):
        dt, rss_o, out_ours = timed([mf, "sql", "--site", str(site), "--format", "csv", q])
        ours.append(dt)
    parquet = site / "cdm/condition_occurrence.parquet"
    dq = q.replace("FROM condition_occurrence", f"FROM read_parquet('{parquet}')")
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        res = duckdb.connect().execute(dq).fetchall()
        theirs.append(time.perf_counter() - t0)
    got = [tuple(int(x) for x in l.split(",")) for l in out_ours.strip().splitlines()[1:]]
    assert got == [tuple(r) for r in res], "medfed and DuckDB disagree"
    nco = duckdb.connect().execute(f"SELECT COUNT(*) FROM read_parquet('{parquet}')").fetchone()[0]
    mo, md = statistics.median(ours), statistics.median(theirs)
    rows.append(("sql: distinct persons by condition concept", f"{site.name} condition_occurrence, {nco:,} rows",
                 f"{mo*1000:,.0f} ms (whole CLI process)", f"DuckDB {md*1000:,.0f} ms in-process", f"{rss_o:,.0f} MiB",
                 f"{mo/md:.2f}x"))


if __name__ == "__main__":
    main()
