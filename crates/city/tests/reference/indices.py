"""Independent reference for medfed-city's indices on the Seoul series (standard library only).

Written from the published definitions, not from the Rust code:
  * CAI (Korea): breakpoints typed in below from AirKorea's table; PM10/PM2.5 as trailing 24-hour
    means needing 18 of 24 hours; gases 1-hour; concentrations truncated to the table's precision;
    index rounded half up; CAI only when PM10, PM2.5, NO2 and O3 are present.
  * AQHI (Canada): 3-hour means (2 of 3 hours), NO2 and O3 in ppb.
  * KMA summer feels-like temperature (Stull wet bulb), daily maximum at tmax with the humidity at
    tmax from the daily mean vapour pressure, and the two-day 33/35 C rules, May-September.

usage: indices.py AIR_CSV WEATHER_CSV OUT_HOURLY_CSV OUT_HEAT_CSV
"""
import csv
import datetime as dt
import math
import sys

# (bp_lo, bp_hi, i_lo, i_hi) per band; decimals the values are truncated to.
TABLE = {
    "so2": (3, [(0, 0.020, 0, 50), (0.021, 0.050, 51, 100), (0.051, 0.150, 101, 250), (0.151, 1, 251, 500)]),
    "co": (2, [(0, 2, 0, 50), (2.01, 9, 51, 100), (9.01, 15, 101, 250), (15.01, 50, 251, 500)]),
    "o3": (3, [(0, 0.030, 0, 50), (0.031, 0.090, 51, 100), (0.091, 0.150, 101, 250), (0.151, 0.6, 251, 500)]),
    "no2": (3, [(0, 0.030, 0, 50), (0.031, 0.060, 51, 100), (0.061, 0.200, 101, 250), (0.201, 2, 251, 500)]),
    "pm10": (0, [(0, 30, 0, 50), (31, 80, 51, 100), (81, 150, 101, 250), (151, 600, 251, 500)]),
    "pm25": (0, [(0, 15, 0, 50), (16, 35, 51, 100), (36, 75, 101, 250), (76, 500, 251, 500)]),
}
GRADES = ["good", "moderate", "unhealthy", "very_unhealthy"]
ORDER = ["pm25", "pm10", "o3", "no2", "co", "so2"]


def sub_index(p, c):
    dec, bands = TABLE[p]
    scale = 10 ** dec
    ct = math.floor(c * scale + 1e-9) / scale
    if ct > bands[-1][1]:
        return 500, 3, 500.0
    for g, (lo, hi, ilo, ihi) in enumerate(bands):
        if lo <= ct <= hi:
            exact = (ihi - ilo) / (hi - lo) * (ct - lo) + ilo
            return math.floor(exact + 0.5), g, exact
    raise ValueError((p, c, ct))


def trailing(xs, window, need):
    out = []
    for t in range(len(xs)):
        w = [x for x in xs[max(0, t - window + 1): t + 1] if x is not None]
        out.append(sum(w) / len(w) if len(w) >= need and w else None)
    return out


def hour_key(s):
    d, h = s.split(" ")
    hh = int(h[:2])
    return dt.date.fromisoformat(d), hh


def main(air, weather, out_hourly, out_heat):
    rows = list(csv.reader(open(air, encoding="utf-8")))
    head = rows[0]
    col = {"pm25": head.index("초미세먼지"), "pm10": head.index("미세먼지"), "o3": head.index("오존"),
           "no2": head.index("이산화탄소"), "co": head.index("일산화탄소"), "so2": head.index("아황산가스")}
    def num(x):
        return None if x.strip() in ("", "-") else float(x)

    # One record per hour (the first, where the file repeats an hour), on a grid from the first
    # hour to the last with None where the file has no record.
    first = {}
    for r in rows[1:]:
        d, hh = hour_key(r[1])
        k = d.toordinal() * 24 + hh
        first.setdefault(k, r)
    lo, hi = min(first), max(first)
    keys = list(range(lo, hi + 1))

    def label(k):
        d, hh = divmod(k, 24)
        if hh == 0:
            d, hh = d - 1, 24
        return f"{dt.date.fromordinal(d).isoformat()} {hh:02d}:00"

    hours = [label(k) for k in keys]
    series = {p: [num(first[k][c]) if k in first else None for k in keys] for p, c in col.items()}
    pm = {p: trailing(series[p], 24, 18) for p in ("pm25", "pm10")}
    aq = {p: trailing(series[p], 3, 2) for p in ("no2", "o3", "pm25")}
    with open(out_hourly, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hour"] + [f"cai_{p}" for p in ORDER] + ["cai", "cai_grade", "cai_main", "aqhi"])
        for t, h in enumerate(hours):
            subs = {}
            for p in ORDER:
                c = pm[p][t] if p in pm else series[p][t]
                subs[p] = None if c is None else sub_index(p, c)
            if all(subs[p] is not None for p in ("pm10", "pm25", "no2", "o3")):
                best = None
                for p in ORDER:
                    if subs[p] is not None and (best is None or subs[p][2] > subs[best][2]):
                        best = p
                cai = [subs[best][0], GRADES[subs[best][1]], best]
            else:
                cai = ["", "", ""]
            if all(aq[p][t] is not None for p in aq):
                e = 1000 / 10.4 * (math.expm1(0.000871 * aq["no2"][t] * 1000) + math.expm1(0.000537 * aq["o3"][t] * 1000)
                                   + math.expm1(0.000487 * aq["pm25"][t]))
                v = min(11, max(1, math.floor(e + 0.5)))
                aqhi = "10+" if v > 10 else str(v)
            else:
                aqhi = ""
            w.writerow([h] + ["" if subs[p] is None else subs[p][0] for p in ORDER] + cai + [aqhi])

    def tw(t, rh):
        return (t * math.atan(0.151977 * math.sqrt(rh + 8.313659)) + math.atan(t + rh) - math.atan(rh - 1.676331)
                + 0.00391838 * rh ** 1.5 * math.atan(0.023101 * rh) - 4.686035)

    def fl(t, rh):
        w_ = tw(t, rh)
        return -0.2442 + 0.55399 * w_ + 0.45535 * t - 0.0022 * w_ * w_ + 0.00278 * w_ * t + 3.0

    def es(t):
        return 6.112 * math.exp(17.62 * t / (243.12 + t))

    days = {}
    for r in csv.DictReader(open(weather, encoding="utf-8")):
        d = dt.date.fromisoformat(r["date"])
        if 5 <= d.month <= 9:
            tx, ta, rh = float(r["tmax_c"]), float(r["tavg_c"]), float(r["humidity_pct"])
            rhx = min(100.0, max(1.0, 100 * rh / 100 * es(ta) / es(tx)))
            days[d] = fl(tx, rhx)
    one = dt.timedelta(days=1)

    def run(d, c):
        def over(x):
            return x in days and days[x] >= c
        return over(d) and (over(d - one) or over(d + one))

    with open(out_heat, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "feels_like_max_c", "level"])
        for d in sorted(days):
            level = "warning" if run(d, 35) else "advisory" if run(d, 33) else "none"
            w.writerow([d.isoformat(), f"{days[d]:.2f}", level])


if __name__ == "__main__":
    main(*sys.argv[1:5])
