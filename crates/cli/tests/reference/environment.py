"""Independent computation of the environment evidence, for crates/cli/tests/city_evidence.

From the sites' Parquet files in DuckDB with hand-written SQL: persons with a record of each syndrome's
concepts (or their descendants) on each day, by district, added over the sites (the pooled data).
The exposures from environment.csv with pandas; the model with statsmodels' ConditionalPoisson
(strata: district x year x month; terms: PM2.5 lag 0-2 mean per 10 ug/m3, max(0, Tmax lag 0-1 mean -
THRESHOLD), six day-of-week indicators); the Pearson dispersion from its fitted values. Usage:

    environment.py STUDY.json ENVIRONMENT.csv THRESHOLD SITE_DIR...

Output: JSON {syndrome: {"names": [...], "beta": [...], "se_model": [...], "phi": x, "rows": n,
"strata": k, "cases": c}}.
"""

import json
import sys

import duckdb
import numpy as np
import pandas as pd
from statsmodels.discrete.conditional_models import ConditionalPoisson


def counts(study, sites):
    a = [x for x in study["analyses"] if x["type"] == "surveillance"][0]
    total = {}
    for site in sites:
        c = duckdb.connect()
        t = lambda n: f"read_parquet('{site}/cdm/{n}.parquet')"
        for syn in a["syndromes"]:
            ids = ",".join(str(x) for x in syn["concepts"])
            concepts = f"""SELECT descendant_concept_id FROM {t('concept_ancestor')}
                           WHERE ancestor_concept_id IN ({ids}) UNION SELECT UNNEST([{ids}])"""
            for district, d, n in c.execute(f"""
                WITH cases AS (
                  SELECT DISTINCT person_id, condition_start_date AS d FROM {t('condition_occurrence')}
                  WHERE condition_concept_id IN ({concepts})
                    AND condition_start_date BETWEEN DATE '{a['from']}' AND DATE '{a['to']}')
                SELECT l.location_source_value, c.d, count(*)
                FROM cases c JOIN {t('person')} p ON p.person_id = c.person_id
                JOIN {t('location')} l ON l.location_id = p.location_id
                GROUP BY 1, 2""").fetchall():
                key = (syn["id"], district, d.isoformat())
                total[key] = total.get(key, 0) + n
    return total


def main():
    study = json.load(open(sys.argv[1]))
    env = pd.read_csv(sys.argv[2], dtype={"district": str})
    thr = float(sys.argv[3])
    n = counts(study, sys.argv[4:])
    env = env.sort_values(["district", "date"]).reset_index(drop=True)
    g = env.groupby("district", sort=False)
    env["pm02"] = (env["pm25"] + g["pm25"].shift(1) + g["pm25"].shift(2)) / 3.0
    env["t01"] = (env["tmax"] + g["tmax"].shift(1)) / 2.0
    dates = pd.to_datetime(env["date"])
    env["stratum"] = env["district"] + "-" + dates.dt.strftime("%Y-%m")
    dow = dates.dt.day_of_week  # Monday = 0
    doy = dates.dt.day_of_year.values.astype(float)
    names = (["pm25_per10", "heat"] + [f"dow_{d}" for d in ["tue", "wed", "thu", "fri", "sat", "sun"]]
             + [f"season_{f}{k}" for k in range(1, 5) for f in ["sin", "cos"]])
    w = 2 * np.pi * doy / 365.25
    x = np.column_stack(
        [env["pm02"] / 10.0, np.maximum(env["t01"] - thr, 0.0)]
        + [(dow == k).astype(float) for k in range(1, 7)]
        + [f(k * w) for k in range(1, 5) for f in [np.sin, np.cos]])
    out = {}
    for syn in [s["id"] for s in [a for a in study["analyses"] if a["type"] == "surveillance"][0]["syndromes"]]:
        y = np.array([n.get((syn, d, day), 0) for d, day in zip(env["district"], env["date"])], float)
        ok = np.isfinite(x).all(axis=1)
        df = pd.DataFrame({"y": y[ok], "s": env["stratum"][ok].values})
        tot = df.groupby("s")["y"].transform("sum")
        size = df.groupby("s")["y"].transform("size")
        keep = ((tot > 0) & (size > 1)).values
        yy, xx, ss = y[ok][keep], x[ok][keep], df["s"].values[keep]
        r = ConditionalPoisson(yy, xx, groups=ss).fit(method="newton", disp=0, maxiter=100)
        beta = np.asarray(r.params)
        eta = xx @ beta
        e = pd.Series(np.exp(eta - eta.max()))
        sums = e.groupby(ss).transform("sum").values
        ytot = pd.Series(yy).groupby(ss).transform("sum").values
        mu = ytot * e.values / sums
        k = len(set(ss))
        phi = float(((yy - mu) ** 2 / mu).sum() / (len(yy) - k - len(beta)))
        out[syn] = {"names": names, "beta": beta.tolist(), "se_model": np.asarray(r.bse).tolist(),
                    "phi": phi, "rows": int(len(yy)), "strata": int(k), "cases": float(yy.sum())}
    print(json.dumps(out))


main()
