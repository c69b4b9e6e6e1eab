#!/usr/bin/env python3
"""Network benchmarks: latency from submit to pooled result for one count analysis over 6 real node
processes (HTTPS on loopback), against DuckDB answering the same count on the pooled Parquet in the
same run; and hub throughput for result posts from many simulated nodes (`medfed bench-hub`).

    python3 bench/network.py --population /tmp/p10m --work /tmp/medfed-net
"""
import argparse, json, os, platform, re, shutil, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import medfed_bin  # noqa: E402

STUDY = {
    "format": "medfed-study/1",
    "name": "latency",
    "analyses": [{"id": "t2d_30plus", "type": "person_count", "domain": "condition",
                  "concepts": [201826], "age": {"min": 30}}],
}


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--population", required=True, help="folder made by medfed synth")
    ap.add_argument("--work", default="/tmp/medfed-net")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/test")
    a = ap.parse_args()
    exe = medfed_bin()
    pop = Path(a.population)
    sites = sorted(p for p in pop.iterdir() if (p / "site.toml").exists())
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    hub = work / "hub"
    run([exe, "hub", "init", "--dir", hub, "--listen", "127.0.0.1:0"])
    procs = [subprocess.Popen([exe, "hub", "serve", "--dir", hub], stdout=open(work / "hub.log", "w"), stderr=subprocess.STDOUT)]
    try:
        while not (hub / "hub.addr").exists():
            time.sleep(0.05)
        url = "https://" + (hub / "hub.addr").read_text().strip()
        for s in sites:
            out = run([exe, "node", "init", "--dir", work / s.name, "--hub", url, "--site", s, "--hub-ca", hub / "tls/cert.pem"])
            key = re.search(r"public key: ([0-9a-f]{64})", out).group(1)
            run([exe, "hub", "add-node", "--dir", hub, "--name", s.name, "--key", key])
        for s in sites:
            procs.append(subprocess.Popen([exe, "node", "run", "--dir", work / s.name], stdout=open(work / f"{s.name}.log", "w"), stderr=subprocess.STDOUT))
        study = work / "study.json"
        study.write_text(json.dumps(STUDY))
        lat, values = [], []
        for _ in range(a.repeats):
            out = run([exe, "study", "submit", "--hub-dir", hub, study, "--wait", "--out", work / "res"])
            lat.append(float(re.search(r"complete in ([0-9.]+) s", out).group(1)))
            values.append(json.loads((work / "res/results.json").read_text())["results"][0]["value"])
    finally:
        for p in procs:
            p.kill()
    # The peer: DuckDB on the pooled Parquet of all sites, same semantics, same run.
    import duckdb
    con = duckdb.connect()
    files = lambda t: "[" + ",".join(f"'{s}/cdm/{t}.parquet'" for s in sites) + "]"
    q = f"""SELECT COUNT(*) FROM (SELECT person_id, MIN(condition_start_date) d FROM read_parquet({files('condition_occurrence')})
            WHERE condition_concept_id IN (SELECT descendant_concept_id FROM read_parquet('{sites[0]}/cdm/concept_ancestor.parquet') WHERE ancestor_concept_id = 201826)
               OR condition_concept_id = 201826 GROUP BY person_id) f
            JOIN read_parquet({files('person')}) p USING (person_id) WHERE year(f.d) - p.year_of_birth >= 30"""
    dd, dv = [], None
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        dv = con.execute(q).fetchone()[0]
        dd.append(time.perf_counter() - t0)
    assert all(v == dv for v in values), f"network {values} != duckdb {dv}"
    persons = sum(int(re.search(r'\[files\."cdm/person\.parquet"\]\s*rows = (\d+)', (s / "site.toml").read_text()).group(1)) for s in sites)
    med, dmed = statistics.median(lat), statistics.median(dd)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; duckdb {duckdb.__version__}")
    print(f"| one count over {len(sites)} nodes, {persons:,} persons | submit→pooled median {med:.3f} s (min {min(lat):.3f}, max {max(lat):.3f}) | DuckDB on pooled Parquet {dmed:.3f} s | ratio {med / dmed:.2f}× | value {dv:,} equal |")
    for db in [None, a.pg]:
        cmd = [exe, "bench-hub", "--dir", work / "bench-hub", "--nodes", "200", "--analyses", "25", "--concurrency", "64"]
        if db:
            cmd += ["--db", db]
        print(run(cmd).strip())


if __name__ == "__main__":
    main()
