#!/usr/bin/env python3
"""Federated GWAS against PLINK 1.9 and PLINK 2 on the same pooled .bed, in the same run.

`medfed synth` builds H hospitals with everyone genotyped on an M-variant panel. The GWAS study
(`examples/studies/gwas.json`'s T2D analysis: population t2d_free_2019, phenotype five-year T2D
onset, covariates age and sex) runs federated over the hospitals twice, allelic test only and
logistic regression only (`medfed study run`: an in-process hub and H nodes with signed tasks). The
hospitals' .bed files are merged with PLINK 1.9 into one pooled .bed, the phenotype and covariates
are each site's `medfed model features` file, and then on the pooled data:

  allelic test:  plink1.9 --assoc
  logistic:      plink1.9 --logistic hide-covar --covar (age, male)
                 plink2 --glm hide-covar --covar (age, male)

with the same samples (--keep). Reported: wall time and peak RSS of each, as ratios, and the
federated overhead: the same study over one hospital holding every sample (a second population of
the same size) against the H-hospital run.

    CARGO_TARGET_DIR=/work/rel-target python3 bench/gwas.py --persons 100000 --snps 100000
"""
import argparse, json, os, platform, shutil, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import ROOT, medfed_bin, timed  # noqa: E402


def study(tests, chunk):
    s = json.loads((ROOT / "examples/studies/gwas.json").read_text())
    a = [x for x in s["analyses"] if x["id"] == "gwas_t2d"][0]
    a["tests"] = tests
    a["chunk_variants"] = chunk
    s["analyses"] = [a]
    s["cohorts"] = {k: v for k, v in s["cohorts"].items() if k in ("t2d_free_2019", "t2d")}
    return s


def population(mf, work, name, persons, hospitals, snps):
    pop = work / name
    if not (pop / "ground_truth.json").exists():
        dt, rss, _ = timed([mf, "synth", "--persons", str(persons), "--hospitals", str(hospitals),
                            "--snps", str(snps), "--genotyped-share", "1.0", "--out", str(pop)])
        print(f"synth {name}: {dt:.1f} s, {rss:.0f} MiB", file=sys.stderr)
    truth = json.loads((pop / "ground_truth.json").read_text())
    return [pop / s["name"] for s in truth["sites"]]


def run_study(mf, work, sites, spec, tag):
    d = work / "studies"
    d.mkdir(exist_ok=True)
    f = d / f"{tag}.json"
    f.write_text(json.dumps(spec))
    out = work / f"out-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [mf, "study", "run", str(f), "--out", str(out)]
    for s in sites:
        cmd += ["--site", str(s)]
    dt, rss, _ = timed(cmd)
    res = json.loads((out / "results.json").read_text())["results"][0]["value"]
    return dt, rss, res, out


def timed_limit(cmd, cwd, limit):
    """`timed`, but stop the whole process group after `limit` seconds (TimeoutExpired)."""
    import signal
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return time.perf_counter() - t0, int(err.strip().splitlines()[-1]) / 1024, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--snps", type=int, default=100_000)
    ap.add_argument("--hospitals", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-plink19-logistic", action="store_true",
                    help="PLINK 1.9's --logistic is the slowest of all; leave it out")
    ap.add_argument("--work", default="/tmp/medfed-bench-gwas")
    ap.add_argument("--tests", default="allelic,logistic",
                    help="which comparisons to run: allelic, logistic or both")
    ap.add_argument("--plink19-logistic-timeout", type=float, default=None,
                    help="stop plink1.9 --logistic after this many seconds and report it unfinished")
    ap.add_argument("--skip-one-hospital-logistic", action="store_true",
                    help="measure the federated overhead on the allelic test only")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    mf = medfed_bin()
    shutil.rmtree(work / "cohorts", ignore_errors=True)
    shutil.copytree(ROOT / "examples/cohorts", work / "cohorts")
    sites = population(mf, work, "pop", a.persons, a.hospitals, a.snps)
    tests_wanted = set(a.tests.split(","))
    need_one = "allelic" in tests_wanted or not a.skip_one_hospital_logistic
    one = population(mf, work, "pop1", a.persons, 1, a.snps) if need_one else None

    rows = []
    fed = {}
    for test, tests in [("allelic", ["assoc"]), ("logistic", ["regression"])]:
        if test not in tests_wanted:
            continue
        dt, rss, res, out = run_study(mf, work, sites, study(tests, a.chunk), f"{test}-{a.hospitals}")
        fed[test] = (dt, rss, res, out)
        rows.append({"test": test, "tool": f"medfed, {a.hospitals} hospitals (federated)",
                     "s": dt, "mib": rss})
        print(f"medfed {test}: {dt:.1f} s over {a.hospitals} sites", file=sys.stderr)
        if test == "logistic" and a.skip_one_hospital_logistic:
            continue
        dt1, rss1, _, _ = run_study(mf, work, one, study(tests, a.chunk), f"{test}-1")
        rows.append({"test": test, "tool": "medfed, 1 hospital holding everyone", "s": dt1,
                     "mib": rss1})
        print(f"medfed {test}: {dt1:.1f} s over one", file=sys.stderr)

    # The pooled .bed and the same samples, phenotype and covariates for PLINK.
    ref = work / "plink"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir()
    (ref / "sites.txt").write_text("".join(f"{s / 'genotypes/site'}\n" for s in sites))
    timed(["plink1.9", "--merge-list", "sites.txt", "--make-bed", "--out", "pooled",
           "--threads", str(a.threads), "--silent"], cwd=ref)
    study_file = next((work / "studies").glob(f"*-{a.hospitals}.json"))
    lines = []
    for k, s in enumerate(sites):
        f = ref / f"pheno{k}.txt"
        timed([mf, "model", "features", str(study_file), "--analysis", "gwas_t2d", "--site", str(s),
               "--out", str(f)])
        t = f.read_text().splitlines()
        lines += t if k == 0 else t[1:]
    (ref / "pheno.txt").write_text("\n".join(lines) + "\n")
    base = ["--bfile", "pooled", "--keep", "pheno.txt", "--pheno", "pheno.txt", "--pheno-name",
            "PHENO", "--allow-no-sex", "--threads", str(a.threads), "--silent"]
    covar = ["--covar", "pheno.txt", "--covar-name", "AGE,MALE"]
    runs = []
    if "allelic" in tests_wanted:
        runs.append(("allelic", "plink1.9 --assoc",
                     ["plink1.9", *base, "--assoc", "--out", "p19"]))
    if "logistic" in tests_wanted:
        # plink2 without its Firth fallback: the same maximum-likelihood fit medfed does.
        runs.append(("logistic", "plink2 --glm no-firth",
                     ["plink2", *base, *covar, "--glm", "hide-covar", "no-firth", "--out", "p2"]))
        if not a.skip_plink19_logistic:
            runs.append(("logistic", "plink1.9 --logistic",
                         ["plink1.9", *base, *covar, "--logistic", "hide-covar", "--out", "p19"]))
    for test, tool, cmd in runs:
        limit = a.plink19_logistic_timeout if tool == "plink1.9 --logistic" else None
        try:
            dt, rss, _ = timed(cmd, cwd=ref) if limit is None else timed_limit(cmd, ref, limit)
        except subprocess.TimeoutExpired:
            rows.append({"test": test, "tool": f"{tool} (stopped unfinished)", "s": limit,
                         "mib": float("nan")})
            print(f"{tool}: stopped after {limit:.0f} s", file=sys.stderr)
            continue
        rows.append({"test": test, "tool": tool, "s": dt, "mib": rss})
        print(f"{tool}: {dt:.1f} s, {rss:.0f} MiB", file=sys.stderr)

    # Same answers? The allelic test token for token; the logistic fit against plink2's printed
    # (6 significant digits) odds ratio and p.
    same_assoc = None
    if "allelic" in fed:
        ours = (fed["allelic"][3] / "gwas_t2d.assoc").read_text().split()
        theirs = (ref / "p19.assoc").read_text().split()
        same_assoc = ours == theirs
    worst_p = worst_or = None
    compared = 0
    if "logistic" in fed:
        p2 = {}
        lines = (ref / "p2.PHENO.glm.logistic").read_text().splitlines()
        head = lines[0].lstrip("#").split("\t")
        col = {h: i for i, h in enumerate(head)}
        for line in lines[1:]:
            f = line.split("\t")
            if f[col["P"]] not in ("NA", "."):
                p2[f[col["ID"]]] = (f[col["A1"]], float(f[col["OR"]]), float(f[col["P"]]))
        worst_p = worst_or = 0.0
        import math
        for v in fed["logistic"][2]["results"]:
            if v.get("glm_p") is None or v["snp"] not in p2:
                continue
            a1, or2, pv = p2[v["snp"]]
            if pv > 1e-300:
                worst_p = max(worst_p, abs(v["glm_p"] - pv) / pv)
            ours_or = math.exp(v["beta"]) if v["a1"] == a1 else math.exp(-v["beta"])
            worst_or = max(worst_or, abs(ours_or - or2) / or2)
            compared += 1
    res = fed.get("allelic", fed.get("logistic"))[2]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "samples": res["samples"], "cases": res["cases"], "controls": res["controls"],
        "variants": res["variants"], "hospitals": a.hospitals, "chunk": a.chunk,
        "assoc_token_for_token": same_assoc, "logistic_compared": compared,
        "logistic_p_max_rel_diff_vs_plink2": worst_p, "logistic_or_max_rel_diff_vs_plink2": worst_or,
        "rows": rows,
    }
    print(json.dumps(report, indent=1))
    print()
    print(f"{res['samples']} samples ({res['cases']} cases) × {res['variants']} variants, "
          f"{a.hospitals} hospitals; {report['machine']}")
    print()
    print("| test | tool | wall s | peak MiB | time vs medfed federated | memory vs medfed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        m = next(x for x in rows if x["test"] == r["test"] and x["tool"].startswith("medfed, "))
        print(f"| {r['test']} | {r['tool']} | {r['s']:.1f} | {r['mib']:.0f} | "
              f"{r['s'] / m['s']:.2f}× | {r['mib'] / m['mib']:.2f}× |")


if __name__ == "__main__":
    main()
