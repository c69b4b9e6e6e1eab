#!/usr/bin/env python3
"""Characterization benchmark: the Achilles-like set of the catalog over all hospitals of a synthetic
population with `medfed study run` (every site's node runs its local step, releases its tables
through the disclosure check, the hub pools them), against DuckDB running the same SQL
(`medfed catalog --json --dialect duckdb`) once on the pooled Parquet, in the same run.

Also the cohort-count latency of a Circe cohort (GI bleeding) over the sites, against DuckDB running
the same cohort SQL (`medfed cohort generate --sql --dialect duckdb`) on the pooled Parquet.

    python3 bench/catalog.py --population /tmp/p1m
"""
import argparse, json, os, platform, re, shutil, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import medfed_bin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    t = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout, time.perf_counter() - t


def pooled(con, sites):
    for t in ["person", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
              "procedure_occurrence", "measurement", "observation", "condition_era", "drug_era", "death"]:
        files = [str(s / "cdm" / f"{t}.parquet") for s in sites]
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet({files!r})")
    for t in ["concept", "concept_ancestor", "location"]:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet('{sites[0] / 'cdm' / (t + '.parquet')}')")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--population", required=True)
    ap.add_argument("--work", default="/tmp/medfed-catalog-bench")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    import duckdb
    exe = medfed_bin()
    pop = Path(a.population)
    sites = sorted(p for p in pop.iterdir() if (p / "site.toml").exists())
    persons = json.loads((pop / "ground_truth.json").read_text())["config"]["persons"]
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    study = work / "achilles.json"
    study.write_text(json.dumps({"format": "medfed-study/1", "name": "characterization",
                                 "analyses": [{"id": "achilles", "type": "characterization"}]}))
    site_args = [x for s in sites for x in ("--site", s)]
    medfed_t, per_analysis = [], {}
    for _ in range(a.repeats):
        _, t = run([exe, "study", "run", study, *site_args, "--out", work / "out"])
        medfed_t.append(t)
        r = json.loads((work / "out" / "results.json").read_text())
        for tab in r["results"][0]["value"]["tables"]:
            per_analysis.setdefault(tab["name"], []).append(sum(tab["elapsed_ms"].values()))
    catalog, _ = run([exe, "catalog", "--json", "--dialect", "duckdb"])
    catalog = json.loads(catalog)
    con = duckdb.connect()
    pooled(con, sites)
    duck_t, duck_per = [], {}
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for x in catalog:
            t1 = time.perf_counter()
            con.execute(x["sql"]).fetchall()
            duck_per.setdefault(str(x["id"]), []).append((time.perf_counter() - t1) * 1000)
        duck_t.append(time.perf_counter() - t0)
    m, d = statistics.median(medfed_t), statistics.median(duck_t)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {persons} persons in {len(sites)} hospitals")
    print(f"characterization, {len(catalog)} Achilles analyses: medfed study run (local steps at every site, release, pool) median {m:.2f} s; DuckDB same SQL on pooled Parquet median {d:.2f} s; ratio {m / d:.2f}")
    slow = sorted(per_analysis.items(), key=lambda kv: -statistics.median(kv[1]))[:5]
    for name, ms in slow:
        print(f"  analysis {name:>5}: medfed {statistics.median(ms):8.0f} ms summed over sites; DuckDB {statistics.median(duck_per[name]):8.0f} ms")

    # Cohort count latency: the GI-bleed Circe cohort over all sites.
    cstudy = work / "cohort.json"
    cstudy.write_text(json.dumps({"format": "medfed-study/1", "name": "cohort count",
                                  "cohorts": {"gi_bleed": {"file": str(ROOT / "examples/cohorts/gi-bleed.json")}},
                                  "analyses": [{"id": "gi_bleed", "type": "cohort_count", "cohort": "gi_bleed"}]}))
    ct, value = [], None
    for _ in range(a.repeats):
        _, t = run([exe, "study", "run", cstudy, *site_args, "--out", work / "cout"])
        ct.append(t)
        value = json.loads((work / "cout" / "results.json").read_text())["results"][0]["value"]
    sql, _ = run([exe, "cohort", "generate", "--site", sites[0], "--sql", "--dialect", "duckdb", ROOT / "examples/cohorts/gi-bleed.json"])
    dt, dval = [], None
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        dval = con.execute(f"SELECT COUNT(DISTINCT subject_id) FROM ({sql}) c").fetchone()[0]
        dt.append(time.perf_counter() - t0)
    print(f"cohort count (Circe GI bleed) over {len(sites)} sites: medfed {statistics.median(ct):.2f} s (value {value}); DuckDB same cohort SQL on pooled Parquet {statistics.median(dt):.2f} s (value {dval}); ratio {statistics.median(ct) / statistics.median(dt):.2f}")
    if value != dval:
        sys.exit("cohort counts differ")


if __name__ == "__main__":
    main()
