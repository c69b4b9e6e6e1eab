"""Independent computation of surveillance counts, for crates/cli/tests/network (surveillance).

Per site, from its Parquet files in DuckDB with hand-written SQL: persons with a record of each
syndrome's concepts (or their descendants) on each day, by district (location_source_value) and by
each vulnerable group on that day (the rules of docs/SYNTHETIC_POPULATION.md). Usage:

    surveil.py STUDY.json SITE_DIR...

Output: JSON {site: {"k,g,district,YYYY-MM-DD": count}} (non-zero cells only).
"""

import json
import sys

import duckdb


def main():
    study = json.load(open(sys.argv[1]))
    a = [x for x in study["analyses"] if x["type"] == "surveillance"][0]
    out = {}
    for site in sys.argv[2:]:
        c = duckdb.connect()
        t = lambda n: f"read_parquet('{site}/cdm/{n}.parquet')"
        rows = []
        for k, syn in enumerate(a["syndromes"]):
            ids = ",".join(str(x) for x in syn["concepts"])
            concepts = f"""SELECT descendant_concept_id FROM {t('concept_ancestor')}
                           WHERE ancestor_concept_id IN ({ids}) UNION SELECT UNNEST([{ids}])"""
            rows += [(k,) + r for r in c.execute(f"""
                WITH cases AS (
                  SELECT DISTINCT person_id, condition_start_date AS d FROM {t('condition_occurrence')}
                  WHERE condition_concept_id IN ({concepts})
                    AND condition_start_date BETWEEN DATE '{a['from']}' AND DATE '{a['to']}')
                SELECT c.person_id, c.d, l.location_source_value,
                  p.year_of_birth, coalesce(p.month_of_birth, 1), coalesce(p.day_of_birth, 1),
                  EXISTS (SELECT 1 FROM {t('payer_plan_period')} pp WHERE pp.person_id = c.person_id
                          AND pp.payer_concept_id = 2000000003
                          AND c.d BETWEEN pp.payer_plan_period_start_date AND pp.payer_plan_period_end_date) AS aid,
                  EXISTS (SELECT 1 FROM {t('observation')} o WHERE o.person_id = c.person_id
                          AND o.observation_concept_id = 2000000001 AND o.observation_date <= c.d) AS dis,
                  EXISTS (SELECT 1 FROM {t('observation')} o WHERE o.person_id = c.person_id
                          AND o.observation_concept_id = 2000000002 AND o.observation_date <= c.d) AS alone,
                  EXISTS (SELECT 1 FROM {t('observation')} o WHERE o.person_id = c.person_id
                          AND o.observation_concept_id = 2000000011) AS outdoor
                FROM cases c JOIN {t('person')} p ON p.person_id = c.person_id
                JOIN {t('location')} l ON l.location_id = p.location_id""").fetchall()]
        counts = {}
        for k, _, d, district, by, bm, bd, aid, dis, alone, outdoor in rows:
            # Completed years on the day.
            age = d.year - by - (1 if (d.month, d.day) < (bm, bd) else 0)
            member = {"elderly": age >= 65, "child_u5": age < 5, "medical_aid": aid,
                      "disability": dis, "elderly_alone": age >= 65 and alone,
                      "outdoor_worker": outdoor, "all": True}
            for g, name in enumerate(a["groups"]):
                if member[name]:
                    key = f"{k},{g},{district},{d.isoformat()}"
                    counts[key] = counts.get(key, 0) + 1
        out[site.rstrip("/").split("/")[-1]] = counts
    print(json.dumps(out))


main()
