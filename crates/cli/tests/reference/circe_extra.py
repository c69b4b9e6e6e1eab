"""Author the extra Circe conformance definitions (crates/cli/tests/cohort/extra) and their expected rows.

The Eunomia set in shared/data/circe_cohorts/eunomia covers the core of Circe; these definitions cover
what medfed added later: nested criteria, AT_LEAST/AT_MOST and nested groups, end windows, distinct
counts, attribute filters (era length and counts, days supply, occurrence dates, visit type), source
concepts with mapped concepts, user-defined observation periods, demographic race/ethnicity and date
criteria, the censor window and a days-supply override.

Expected rows come from the Circe SQL oracle (ohdsi-circepy 0.3.0, SQL rendered for DuckDB), with the
shared oracle tools:

    python3 -m venv /tmp/circe-venv && /tmp/circe-venv/bin/pip install ohdsi-circepy==0.3.0 duckdb==1.5.6
    (cd shared/data/circe_cohorts/tools && /tmp/circe-venv/bin/python load_cdm.py gibleed /tmp/circe/gibleed.duckdb)
    CIRCE_WORK=/tmp/circe /tmp/circe-venv/bin/python crates/cli/tests/reference/circe_extra.py

Output files: <name>.json and <name>.expected.csv.gz (header subject_id,cohort_start_date,cohort_end_date,
rows sorted by subject, start, end), as in the Eunomia set.
"""
import gzip, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.normpath(os.path.join(HERE, "../../../../../shared/data/circe_cohorts/tools"))
OUT = os.path.normpath(os.path.join(HERE, "../cohort/extra"))
sys.path.insert(0, TOOLS)
import oracle  # noqa: E402
from builder import (AT_LEAST, AT_MOST, EXACTLY, cohort, corr, cset, custom_era, date_offset,  # noqa: E402
                     gender, group, item, rng, rule, window)

GI_BLEED, CELECOXIB, DICLOFENAC, ACETAMINOPHEN, OSTEOARTHRITIS = 192671, 1118084, 1124300, 1125315, 80180
NSAIDS = 21603933  # ATC class, absent from CONCEPT; its descendants resolve
INPATIENT = 9201


def defs():
    d = {}
    # Nested criteria: GI bleeds that themselves follow an NSAID within 30 days.
    d["x01_gi_bleed_nested_prior_nsaid"] = cohort(
        [cset(0, "GI bleed", [item(GI_BLEED)]), cset(1, "NSAIDs", [item(NSAIDS)])],
        [{"ConditionOccurrence": {"CodesetId": 0, "CorrelatedCriteria": group("ALL", [
            corr({"DrugExposure": {"CodesetId": 1}}, window(30, -1, 0, 1), AT_LEAST, 1)])}}],
        end_strategy=date_offset("StartDate", 7))
    # AT_LEAST 2 of three items, one of them a nested ANY group.
    d["x02_osteoarthritis_at_least_two_of_three"] = cohort(
        [cset(0, "Osteoarthritis", [item(OSTEOARTHRITIS)]), cset(1, "Celecoxib", [item(CELECOXIB)]),
         cset(2, "Diclofenac", [item(DICLOFENAC)])],
        [{"ConditionOccurrence": {"CodesetId": 0}}], primary_limit="First",
        inclusion_rules=[rule("two of three", "", group("AT_LEAST", [
            corr({"DrugExposure": {"CodesetId": 1}}, window(0, 1, 365, 1), AT_LEAST, 1),
            corr({"DrugExposure": {"CodesetId": 2}}, window(0, 1, 365, 1), AT_LEAST, 1)],
            [{"Gender": gender(8532)}],
            [group("ANY", demographics=[{"Age": rng("gte", 60)}, {"Race": [{"CONCEPT_ID": 8527}]}])],
            count=2))])
    # AT_MOST 1 (zero included) with exactly-0 and nested groups.
    d["x03_gi_bleed_at_most_one_risk"] = cohort(
        [cset(0, "GI bleed", [item(GI_BLEED)]), cset(1, "NSAIDs", [item(NSAIDS)]),
         cset(2, "Osteoarthritis", [item(OSTEOARTHRITIS)])],
        [{"ConditionOccurrence": {"CodesetId": 0}}],
        additional=group("AT_MOST", [
            corr({"DrugExposure": {"CodesetId": 1}}, window(30, -1, 0, -1), AT_LEAST, 1),
            corr({"ConditionOccurrence": {"CodesetId": 2}}, window(None, -1, 0, -1), AT_LEAST, 1)],
            groups=[group("ALL", demographics=[{"Age": rng("gt", 40)}, {"Gender": gender(8507)}])], count=1),
        qualified_limit="All")
    # End window and distinct counts: acetaminophen starts with at least two distinct drugs starting
    # within 30 days after and ending by day 60.
    d["x04_acetaminophen_distinct_drugs_end_window"] = cohort(
        [cset(0, "Acetaminophen", [item(ACETAMINOPHEN)])],
        [{"DrugExposure": {"CodesetId": 0}}], primary_limit="First",
        inclusion_rules=[rule("co-medication", "", group("ALL", [
            corr({"DrugExposure": {}}, window(0, 1, 30, 1), AT_LEAST, 2, end_window=window(0, 1, 60, 1, use_event_end=True),
                 distinct=True)]))],
        end_strategy=date_offset("StartDate", 30))
    # Era and exposure attributes.
    d["x05_era_and_exposure_attributes"] = cohort(
        [cset(0, "Acetaminophen", [item(ACETAMINOPHEN)]), cset(1, "Osteoarthritis", [item(OSTEOARTHRITIS)])],
        [{"DrugEra": {"CodesetId": 0, "EraLength": rng("gte", 30), "OccurrenceCount": rng("gte", 2),
                      "AgeAtStart": rng("bt", 20, 50)}},
         {"DrugExposure": {"CodesetId": 0, "DaysSupply": rng("gte", 30)}},
         {"ConditionEra": {"CodesetId": 1, "EraLength": rng("lt", 100), "AgeAtEnd": rng("gte", 50)}}],
        end_strategy=date_offset("EndDate", 0), era_pad=0)
    # Occurrence dates, visit type, censor window.
    d["x06_inpatient_gi_bleed_dates_censor_window"] = cohort(
        [cset(0, "GI bleed", [item(GI_BLEED)])],
        [{"ConditionOccurrence": {"CodesetId": 0, "VisitType": [{"CONCEPT_ID": INPATIENT}],
                                  "OccurrenceStartDate": rng("bt", "1990-01-01", "2015-12-31")}},
         {"ConditionOccurrence": {"CodesetId": 0, "OccurrenceStartDate": rng("gte", "2016-01-01")}}],
        end_strategy=date_offset("StartDate", 400),
        censor_window={"StartDate": "2000-01-01", "EndDate": "2012-06-30"})
    # Source concepts: the GI-bleed source code maps to the standard concept; only includeMapped finds it.
    d["x07_source_concept_include_mapped"] = cohort(
        [cset(0, "GI bleed + mapped", [item(GI_BLEED, desc=False, mapped=True)]),
         cset(1, "GI bleed", [item(GI_BLEED, desc=False)]),
         cset(2, "Celecoxib mapped", [item(1118088, desc=False, mapped=True)])],
        [{"ConditionOccurrence": {"ConditionSourceConcept": 0, "First": True}},
         {"ConditionOccurrence": {"ConditionSourceConcept": 1}},
         {"DrugExposure": {"DrugSourceConcept": 2, "First": True}}],
        end_strategy=date_offset("StartDate", 0))
    # User-defined observation periods with demographic race, ethnicity and date criteria.
    d["x08_observed_on_2005_01_01_demographics"] = cohort(
        [], [{"ObservationPeriod": {"UserDefinedPeriod": {"StartDate": "2005-01-01", "EndDate": "2005-12-31"},
                                    "PeriodLength": rng("gte", 3650)}}],
        additional=group("ALL", demographics=[{"Age": rng("bt", 18, 64), "Ethnicity": [{"CONCEPT_ID": 0}],
                                               "OccurrenceStartDate": rng("lte", "2005-06-01")}]),
        end_strategy=date_offset("StartDate", 1))
    # Custom era with a days-supply override, censoring, at-most occurrence.
    d["x09_celecoxib_override_era_censored"] = cohort(
        [cset(0, "Celecoxib", [item(CELECOXIB)]), cset(1, "GI bleed", [item(GI_BLEED)])],
        [{"DrugExposure": {"CodesetId": 0}}],
        inclusion_rules=[rule("few prior bleeds", "", group("ALL", [
            corr({"ConditionOccurrence": {"CodesetId": 1}}, window(None, -1, 1, -1), AT_MOST, 1)]))],
        end_strategy=custom_era(0, 14, offset=7, days_supply_override=30),
        censoring=[{"ConditionOccurrence": {"CodesetId": 1}}], era_pad=3)
    # Index end windows with unbounded sides (bounded by the observation period as Circe does).
    d["x10_unbounded_windows_event_end"] = cohort(
        [cset(0, "Diclofenac", [item(DICLOFENAC)]), cset(1, "Osteoarthritis", [item(OSTEOARTHRITIS)])],
        [{"DrugEra": {"CodesetId": 0}}],
        inclusion_rules=[rule("condition ends any time after", "", group("ALL", [
            corr({"ConditionEra": {"CodesetId": 1}}, window(None, 1, None, 1, use_index_end=True, use_event_end=True),
                 EXACTLY, 0)]))],
        end_strategy=date_offset("EndDate", 0))
    # Date adjustment (start/end moved, age and date filters on the adjusted dates, First on the
    # record's own start) and occurrence end dates on the criterion's end (drug end from days supply).
    d["x11_date_adjustment_and_end_dates"] = cohort(
        [cset(0, "Acetaminophen", [item(ACETAMINOPHEN)]), cset(1, "GI bleed", [item(GI_BLEED)])],
        [{"DrugExposure": {"CodesetId": 0, "First": True, "Age": rng("gte", 30),
                           "DateAdjustment": {"StartWith": "END_DATE", "StartOffset": -7,
                                              "EndWith": "END_DATE", "EndOffset": 14},
                           "OccurrenceEndDate": rng("gte", "2000-01-01")}},
         {"ConditionOccurrence": {"CodesetId": 1, "DateAdjustment": {"StartWith": "START_DATE",
                                  "StartOffset": 3, "EndWith": "START_DATE", "EndOffset": 1}}}],
        end_strategy=date_offset("EndDate", 0))
    return d


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, expr in defs().items():
        rows = oracle.run_sql_duckdb(expr, oracle.WORK + "/gibleed.duckdb")
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(expr, f, indent=1)
            f.write("\n")
        text = "subject_id,cohort_start_date,cohort_end_date\n" + "".join(f"{s},{a},{b}\n" for s, a, b in rows)
        with gzip.GzipFile(os.path.join(OUT, name + ".expected.csv.gz"), "wb", mtime=0) as f:
            f.write(text.encode())
        print(f"{name:48s} persons={len({r[0] for r in rows}):5d} entries={len(rows):6d}")


main()
