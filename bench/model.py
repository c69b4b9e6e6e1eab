#!/usr/bin/env python3
"""Federated logistic regression against statsmodels on the same rows, in the same run.

`medfed bench-model` draws N persons × K covariates from a known logistic model, splits them over S
sites, and fits the exact federated model (Newton rounds over per-site score and information sums);
it writes the same rows as .npy. statsmodels then fits Logit (Newton) on the pooled rows. Reported:
wall time and peak memory of both (as ratios), time per Newton round (slowest site's local step),
one round's secure-aggregation cost, and the largest coefficient difference.

    CARGO_TARGET_DIR=/work/rel-target python3 bench/model.py --rows 10000000 --covariates 20 --sites 6
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import medfed_bin  # noqa: E402

STATSMODELS = r"""
import json, resource, sys, time
import numpy as np
import statsmodels.api as sm
x = np.load(sys.argv[1] + "_x.npy", mmap_mode=None)
y = np.load(sys.argv[1] + "_y.npy")
t = time.perf_counter()
r = sm.Logit(y, x).fit(method="newton", tol=1e-10, maxiter=50, disp=0)
fit_s = time.perf_counter() - t
print(json.dumps({"fit_s": fit_s, "params": r.params.tolist(), "bse": r.bse.tolist(),
                  "iterations": int(r.mle_retvals["iterations"]),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--covariates", type=int, default=20)
    ap.add_argument("--sites", type=int, default=6)
    ap.add_argument("--work", default="/tmp/medfed-bench-model")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    prefix = str(work / "rows")
    t = time.perf_counter()
    out = subprocess.run([medfed_bin(), "bench-model", "--rows", str(a.rows), "--covariates",
                          str(a.covariates), "--sites", str(a.sites), "--npy", prefix, "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    ours = json.loads(out.stdout)
    ours["process_s"] = time.perf_counter() - t
    sm = subprocess.run([sys.executable, "-c", STATSMODELS, prefix], capture_output=True, text=True)
    if sm.returncode != 0:
        sys.exit(sm.stderr)
    ref = json.loads(sm.stdout)
    diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours["coefficients"], ref["params"]))
    se_diff = max(abs(a - b) / b for a, b in zip(ours["std_errors"], ref["bse"]))
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": a.rows, "covariates": a.covariates, "sites": a.sites,
        "medfed_fit_s": ours["fit_s"], "medfed_iterations": ours["iterations"],
        "medfed_round_ms_slowest_site": ours["round_ms_slowest_site"],
        "medfed_peak_rss_mib": ours["peak_rss_mib"],
        "secagg_round_ms": ours["secagg_round_ms"], "ring_elements_per_site": ours["ring_elements_per_site"],
        "statsmodels_fit_s": ref["fit_s"], "statsmodels_iterations": ref["iterations"],
        "statsmodels_peak_rss_mib": ref["peak_rss_mib"],
        "time_ratio_medfed_over_statsmodels": ours["fit_s"] / ref["fit_s"],
        "memory_ratio_medfed_over_statsmodels": ours["peak_rss_mib"] / ref["peak_rss_mib"],
        "max_rel_coefficient_difference": diff, "max_rel_se_difference": se_diff,
        "max_abs_z_from_truth": ours["max_abs_z_from_truth"],
    }
    print(json.dumps(report, indent=2))
    for f in ("rows_x.npy", "rows_y.npy"):
        (work / f).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
