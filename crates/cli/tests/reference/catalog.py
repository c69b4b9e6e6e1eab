"""Independent computation of the R&D catalog on the pooled data, for crates/cli/tests/catalog.

The sites' Parquet files are pooled in DuckDB (one view per CDM table over every site). The Achilles
analyses run the catalog's DuckDB SQL (`medfed catalog --json --dialect duckdb`) on the pooled views,
so federation (local step, release with disclosure control off, cell-wise combine) is checked
against one query over all rows. Everything cohort-based is written here from scratch in DuckDB
SQL and Python over the pooled cohort rows (`medfed cohort generate`, checked separately against
the Circe oracle), and survival uses statsmodels' SurvfuncRight.

Output: JSON {analysis_id: {"tables": {table: {"key|key": [values]}}, ...derived}}.
"""

import argparse
import json
import math
import sys

import duckdb
import numpy as np

VOCAB = {"concept", "concept_ancestor", "concept_relationship", "concept_synonym", "vocabulary",
         "domain", "concept_class", "relationship", "drug_strength", "location", "care_site"}


def connect(sites):
    c = duckdb.connect()
    for t in ["person", "observation_period", "visit_occurrence", "condition_occurrence",
              "drug_exposure", "procedure_occurrence", "measurement", "observation", "location",
              "concept_ancestor"]:
        files = [f"{s}/cdm/{t}.parquet" for s in sites]
        distinct = "DISTINCT" if t in VOCAB else ""
        c.execute(f"CREATE VIEW {t} AS SELECT {distinct} * FROM read_parquet({files!r})")
    return c


def table(rows, nd):
    out = {}
    for r in rows:
        key = "|".join("null" if v is None else str(v) for v in r[:nd])
        out[key] = [0.0 if v is None else float(v) for v in r[nd:]]
    return out


def cohort_view(c, name, csv):
    c.execute(f"""CREATE VIEW {name} AS SELECT subject_id, CAST(cohort_start_date AS DATE) AS s,
                  CAST(cohort_end_date AS DATE) AS e FROM read_csv({csv!r}, header=true)""")


def age_group(age, band):
    lo = max(age, 0) // band * band
    return str(lo) if band == 1 else f"{lo}-{lo + band - 1}"


def sex(g):
    return {8507: "male", 8532: "female"}.get(g, "other")


def tar_rows(c, target, outcome):
    """Per entry of `target`: person, sex, age at start, time-at-risk days, event flag, time to
    event or censoring (days from the start). Time at risk: cohort start to cohort end, capped at
    the end of the observation period holding the start, ending at the first outcome."""
    q = f"""
      WITH e AS (
        SELECT t.subject_id, t.s, LEAST(t.e, op.observation_period_end_date) AS t_end,
               p.gender_concept_id AS g, EXTRACT(YEAR FROM t.s) - p.year_of_birth AS age
        FROM {target} t JOIN person p ON p.person_id = t.subject_id
        JOIN observation_period op ON op.person_id = t.subject_id
          AND op.observation_period_start_date <= t.s AND t.s <= op.observation_period_end_date),
      f AS (
        SELECT e.subject_id, e.s, e.t_end, e.g, e.age, MIN(o.s) AS o
        FROM e LEFT JOIN {outcome} o ON o.subject_id = e.subject_id AND o.s BETWEEN e.s AND e.t_end
        GROUP BY ALL)
      SELECT subject_id, g, age, date_diff('day', s, COALESCE(o, t_end)) AS dur, o IS NOT NULL AS ev
      FROM f WHERE t_end >= s"""
    return c.execute(q).fetchall()


def incidence(rows, band, prefix=()):
    out = {}
    for _, g, age, dur, ev in rows:
        k = "|".join(list(prefix) + [age_group(int(age), band), sex(g)])
        v = out.setdefault(k, [0.0, 0.0, 0.0])
        v[0] += 1
        v[1] += 1 if ev else 0
        v[2] += dur + 1
    return out


def mantel_haenszel(tab):
    strata = {}
    for k, (_, o, pd) in tab.items():
        arm, rest = k.split("|", 1)
        s = strata.setdefault(rest, {"target": [0, 0], "comparator": [0, 0]})
        s[arm][0] += o
        s[arm][1] += pd / 365.25
    num = den = 0.0
    o1 = t1 = o0 = t0 = 0.0
    for s in strata.values():
        a, n1 = s["target"]
        b, n0 = s["comparator"]
        o1 += a; t1 += n1; o0 += b; t0 += n0
        if n1 + n0 > 0:
            num += a * n0 / (n1 + n0)
            den += b * n1 / (n1 + n0)
    return {"crude": (o1 / t1) / (o0 / t0), "mh": num / den}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", nargs="+", required=True)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--cohorts", required=True, help="folder with <cohort id>.csv, pooled")
    a = ap.parse_args()
    c = connect(a.sites)
    study = json.load(open(a.study))
    for cid in study.get("cohorts") or {}:
        cohort_view(c, f"cohort_{cid}", f"{a.cohorts}/{cid}.csv")
    out = {}
    catalog = json.load(open(a.catalog))
    for an in study["analyses"]:
        ty, aid = an["type"], an["id"]
        if ty == "characterization":
            ids = an.get("analyses") or [x["id"] for x in catalog]
            tabs = {}
            for x in catalog:
                if x["id"] in ids:
                    tabs[str(x["id"])] = table(c.execute(x["sql"]).fetchall(), len(x["dims"]))
            out[aid] = {"tables": tabs}
        elif ty == "cross_tab":
            def cov(v, alias):
                if v == "sex":
                    return "CAST(p.gender_concept_id AS VARCHAR)", ""
                if v == "age_group":
                    return ("COALESCE(CAST(CAST(FLOOR((EXTRACT(YEAR FROM fo.s) - p.year_of_birth) / 10.0) * 10 AS BIGINT) AS VARCHAR), 'unknown')", "")
                if v == "province":
                    return "COALESCE(l.state, 'unknown')", ""
                (dom, ids), = v.items()
                tbl, col = ("condition_occurrence", "condition_concept_id") if dom == "condition" else ("drug_exposure", "drug_concept_id")
                lst = ",".join(map(str, ids))
                return (f"CASE WHEN {alias}.person_id IS NULL THEN 'no' ELSE 'yes' END",
                        f"LEFT JOIN (SELECT DISTINCT person_id FROM {tbl} WHERE {col} IN ({lst}) OR {col} IN "
                        f"(SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id IN ({lst}))) {alias} "
                        f"ON {alias}.person_id = p.person_id")
            re_, rj = cov(an["rows"], "rj")
            ce, cj = cov(an["cols"], "cj")
            q = f"""SELECT {re_}, {ce}, COUNT(*) FROM person p
                    LEFT JOIN (SELECT person_id, MIN(observation_period_start_date) s FROM observation_period GROUP BY 1) fo ON fo.person_id = p.person_id
                    LEFT JOIN location l ON l.location_id = p.location_id {rj} {cj} GROUP BY 1, 2"""
            out[aid] = {"tables": {"crosstab": table(c.execute(q).fetchall(), 2)}}
        elif ty == "descriptive":
            v = an["variable"]
            if v == "age":
                q = """SELECT EXTRACT(YEAR FROM MIN(op.observation_period_start_date)) - MIN(p.year_of_birth)
                       FROM person p JOIN observation_period op ON op.person_id = p.person_id GROUP BY p.person_id"""
                pq = "SELECT COUNT(DISTINCT person_id) FROM observation_period"
            else:
                q = f"SELECT value_as_number FROM measurement WHERE measurement_concept_id = {v['measurement']} AND value_as_number IS NOT NULL"
                pq = f"SELECT COUNT(DISTINCT person_id) FROM measurement WHERE measurement_concept_id = {v['measurement']} AND value_as_number IS NOT NULL"
            x = np.array([float(r[0]) for r in c.execute(q).fetchall()])
            out[aid] = {"n": len(x), "persons": c.execute(pq).fetchone()[0], "mean": float(x.mean()),
                        "sd": float(x.std(ddof=1)),
                        "quantiles": {k: float(np.quantile(x, p)) for k, p in
                                      [("p05", .05), ("p25", .25), ("median", .5), ("p75", .75), ("p95", .95)]}}
        elif ty == "incidence_rate":
            rows = tar_rows(c, f"cohort_{an['target']}", f"cohort_{an['outcome']}")
            out[aid] = {"tables": {"incidence": incidence(rows, an.get("age_band", 10))}}
        elif ty == "comparative_cohort":
            band = an.get("age_band", 10)
            tab = incidence(tar_rows(c, f"cohort_{an['target']}", f"cohort_{an['outcome']}"), band, ("target",))
            tab.update(incidence(tar_rows(c, f"cohort_{an['comparator']}", f"cohort_{an['outcome']}"), band, ("comparator",)))
            out[aid] = {"tables": {"comparative": tab}, **mantel_haenszel(tab)}
            # An independent estimator: Poisson regression with stratum effects (statsmodels).
            import statsmodels.api as sm
            keys = sorted(k for k in tab if tab[k][2] > 0)
            strata = sorted({k.split("|", 1)[1] for k in keys})
            X = np.array([[1.0 if k.startswith("target|") else 0.0] + [1.0 if k.split("|", 1)[1] == s else 0.0 for s in strata] for k in keys])
            y = np.array([tab[k][1] for k in keys])
            off = np.log(np.array([tab[k][2] for k in keys]))
            fit = sm.GLM(y, X, family=sm.families.Poisson(), offset=off).fit()
            out[aid]["poisson_rr"] = float(math.exp(fit.params[0]))
        elif ty == "kaplan_meier":
            from statsmodels.duration.survfunc import SurvfuncRight
            rows = tar_rows(c, f"cohort_{an['target']}", f"cohort_{an['outcome']}")
            step = an.get("interval_days", 30)
            t = np.array([math.ceil(r[3] / step) * step for r in rows], dtype=float)
            ev = np.array([1 if r[4] else 0 for r in rows])
            sf = SurvfuncRight(t, ev)
            out[aid] = {"survival": {str(int(tt)): float(s) for tt, s in zip(sf.surv_times, sf.surv_prob)},
                        "tables": {"survival": {}}}
            for tt, e in zip(t, ev):
                k = f"{int(tt)}|{'event' if e else 'censored'}"
                out[aid]["tables"]["survival"].setdefault(k, [0.0])[0] += 1
        elif ty == "cohort_characterization":
            cid = f"cohort_{an['cohort']}"
            w = an.get("window_days", 365)
            c.execute(f"CREATE OR REPLACE TEMP VIEW ix AS SELECT subject_id, MIN(s) AS idx FROM {cid} GROUP BY 1")
            demo = {}
            for g, yob, idx in c.execute("SELECT p.gender_concept_id, p.year_of_birth, ix.idx FROM ix JOIN person p ON p.person_id = ix.subject_id").fetchall():
                k = f"{age_group(idx.year - yob, 10)}|{sex(g)}"
                demo.setdefault(k, [0.0])[0] += 1
            tabs = {"demographics": demo}
            for name, tbl, col, d in [("conditions", "condition_occurrence", "condition_concept_id", "condition_start_date"),
                                      ("drugs", "drug_exposure", "drug_concept_id", "drug_exposure_start_date")]:
                q = f"""SELECT CAST(x.{col} AS VARCHAR), COUNT(DISTINCT x.person_id) FROM {tbl} x JOIN ix ON ix.subject_id = x.person_id
                        WHERE x.{d} BETWEEN ix.idx - INTERVAL {w} DAY AND ix.idx GROUP BY 1"""
                tabs[name] = table(c.execute(q).fetchall(), 1)
            out[aid] = {"tables": tabs}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
