#!/usr/bin/env python3
"""In-car emergencies, benchmarked against peers in the same run.

1. R-peak detection on MIT-BIH record 100 (MLII, 30 min at 360 Hz): `medfed vehicles detect` against
   wfdb-python's XQRS on the same file, both scored against the cardiologists' annotations within
   150 ms (wfdb.processing.compare_annotations), with their times.
2. The vehicle service under load: simulated cars at 1 Hz vitals plus one ECG chunk a second through
   mosquitto on 127.0.0.1:1883 into one service worker: sustained vehicles per core (cars divided by
   the worker's busy share) and sample-to-decision latency (`medfed vehicles bench`).

    cargo build --release
    pip install wfdb
    python3 bench/vehicles.py [--cars 250,500,1000] [--seconds 60]
"""
import argparse
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data", "physionet_wfdb_samples", "wfdb")


def medfed(exe, *args):
    t = time.perf_counter()
    out = subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "medfed"))
    ap.add_argument("--cars", default="250,500,1000")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    a = ap.parse_args()

    import wfdb
    from wfdb import processing

    rec = os.path.join(DATA, "100")
    out, wall = medfed(a.exe, "vehicles", "detect", "--record", rec, "--lead", "MLII",
                       "--annotations", rec + ".atr", "--out", "/tmp/medfed-100.beats")
    print("medfed:", out.strip().replace("\n", "\n        "), f"(process {wall:.2f} s)")
    ours = [int(x) for x in open("/tmp/medfed-100.beats")]

    r = wfdb.rdrecord(rec, channel_names=["MLII"])
    ann = wfdb.rdann(rec, "atr")
    beat_symbols = set("NLRBAaJSVrFejnE/fQ?")
    ref = [s for s, sym in zip(ann.sample, ann.symbol) if sym in beat_symbols]
    t = time.perf_counter()
    xq = processing.XQRS(sig=r.p_signal[:, 0], fs=r.fs)
    xq.detect(verbose=False)
    t_xqrs = time.perf_counter() - t
    import numpy as np
    win = int(0.150 * r.fs)
    for name, beats in [("medfed", ours), ("XQRS", list(xq.qrs_inds))]:
        c = processing.compare_annotations(np.array(ref), np.array(beats), win)
        print(f"{name:>6}: {len(beats)} beats; sensitivity {100 * c.sensitivity:.2f} %, positive predictivity {100 * c.positive_predictivity:.2f} % (wfdb's scorer)")
    print(f"  XQRS detection took {t_xqrs:.3f} s")

    out, wall = medfed(a.exe, "vehicles", "bench", "--broker", a.broker, "--cars", a.cars,
                       "--seconds", str(a.seconds))
    print(out)


if __name__ == "__main__":
    main()
