#!/usr/bin/env python3
"""The hub's full detector run at pilot scale, and its Farrington step against R in the same run.

`medfed bench-surveil` draws five years of daily network totals for 250 districts x 5 groups x
5 syndromes (Poisson, log-normal cell baselines, an annual cycle, planted outbreaks), runs every
detector and the grouping (`analysis::surveil::detect`), and times Farrington Flexible alone on all
weekly series; it writes `--farrington-series` weekly series with this build's bounds. R
`surveillance::farringtonFlexible` then runs on those series with the same control (Noufaily
settings, b = 1, 3 past weeks left out, alpha 0.01) and its time, alarms and bounds are compared.

    apt-get install -y --no-install-recommends r-base-core r-cran-surveillance
    CARGO_TARGET_DIR=… python3 bench/surveil.py --series 100
"""
import argparse, csv, json, os, platform, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation import medfed_bin  # noqa: E402

R = r"""
suppressPackageStartupMessages(library(surveillance))
args <- commandArgs(TRUE)
d <- read.csv(args[1])
first <- as.integer(args[2])
out <- list(); t0 <- proc.time()[["elapsed"]]
for (s in unique(d$series)) {
  x <- d[d$series == s, ]
  obj <- sts(observed = matrix(x$observed, ncol = 1), start = c(2000, 1), frequency = 52)
  ctl <- list(range = first:nrow(x), noPeriods = 10, b = 1, w = 3, weightsThreshold = 2.58,
              pastWeeksNotIncluded = 3, pThresholdTrend = 1, thresholdMethod = "nbPlugin",
              alpha = 0.01, trend = TRUE, populationOffset = FALSE, glmWarnings = FALSE)
  r <- farringtonFlexible(obj, control = ctl)
  out[[length(out) + 1]] <- data.frame(series = s, t = first:nrow(x),
    upperbound = as.vector(upperbound(r)), alarm = as.integer(as.vector(alarms(r))))
}
el <- proc.time()[["elapsed"]] - t0
res <- do.call(rbind, out)
write.csv(res, args[3], row.names = FALSE)
cat(el, "\n")
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100, help="weekly series R runs on")
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--syndromes", type=int, default=5)
    ap.add_argument("--work", default="/tmp/medfed-bench-surveil")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    series_csv = work / "weekly.csv"
    t = time.perf_counter()
    out = subprocess.run([medfed_bin(), "bench-surveil", "--groups", str(a.groups),
                          "--syndromes", str(a.syndromes), "--farrington-csv", str(series_csv),
                          "--farrington-series", str(a.series), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    ours = json.loads(out.stdout)
    ours["process_s"] = time.perf_counter() - t
    subset_s = float(out.stderr.strip().split()[-2]) if "farrington subset" in out.stderr else None
    r_script = work / "ff.R"
    r_script.write_text(R)
    r_out = work / "r.csv"
    r = subprocess.run(["Rscript", str(r_script), str(series_csv), str(ours["farrington_first_week"]), str(r_out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    r_s = float(r.stdout.split()[-1])
    mine = {}
    for row in csv.DictReader(open(series_csv)):
        if row["upperbound"] != "":
            mine[(row["series"], row["t"])] = (row["upperbound"], row["alarm"])
    same_alarm, n, worst = 0, 0, 0.0
    for row in csv.DictReader(open(r_out)):
        m = mine.get((row["series"], row["t"]))
        if m is None:
            continue
        n += 1
        ra = "NA" if row["alarm"] == "NA" else row["alarm"]
        same_alarm += (m[1] == ra) or (m[1] == "NA" and ra in ("NA", "0"))
        if m[0] != "NA" and row["upperbound"] != "NA":
            b = float(row["upperbound"])
            worst = max(worst, abs(float(m[0]) - b) / max(abs(b), 1e-12))
    per_series_r = r_s / a.series
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        **{k: ours[k] for k in ("districts", "groups", "syndromes", "days", "series", "values",
                                "detect_s", "farrington_s", "alarms", "alerts_raised", "peak_rss_mib")},
        "farrington_subset_series": a.series,
        "medfed_farrington_subset_s": subset_s,
        "r_farrington_subset_s": r_s,
        "time_ratio_medfed_over_r_farrington": (subset_s / r_s) if subset_s else None,
        "r_farrington_all_series_extrapolated_s": per_series_r * ours["series"],
        "points_compared": n, "same_alarm": same_alarm, "max_rel_bound_difference": worst,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
