//! Alert quality on the Seoul years (2018–2022): the rules replayed hour by hour, each year with
//! outlooks fitted on the other years.

use medfed_city::cai::{Grade, PmAverage, Table};
use medfed_city::feed::Pollutant;
use medfed_city::quality::{self, NO_CATEGORY};
use medfed_city::rules::{RuleSet, CATEGORIES};
use medfed_city::{indices, seoul, series};

#[test]
fn seoul_years_warnings_per_person_and_coverage() {
    let got = seoul::air().unwrap();
    let mut flags = got.flags;
    let s = series::air_series("seoul", got.records, &mut flags).remove(0);
    let weather = seoul::weather().unwrap().records;
    let q = quality::replay(&s, &weather, &RuleSet::standard()).unwrap();
    assert_eq!(q.years, vec![2018, 2019, 2020, 2021, 2022]);

    // The very unhealthy hours are the CAI's: PM2.5 sub-index graded very unhealthy.
    let rows = indices::air(&Table::standard(), &s, PmAverage::Trailing24h);
    let vu = rows
        .iter()
        .filter(|r| {
            r.cai.sub[Pollutant::Pm25.index()].is_some_and(|x| x.grade == Grade::VeryUnhealthy)
        })
        .count();
    assert_eq!(q.very_unhealthy_hours, vu);
    assert!(vu > 300, "{vu}");

    eprintln!("group: advisories/yr, warnings/yr");
    for g in CATEGORIES.iter().chain([&NO_CATEGORY]) {
        let (a, w) = q.per_year(g);
        eprintln!("  {g:15} {a:6.1} {w:6.1}");
    }
    eprintln!(
        "very unhealthy PM2.5 hours {}; covered by a warning beforehand {} ({:.1} %), by any message {} ({:.1} %); median lead {:?} h; warning episodes {} ({} without a very unhealthy hour); expired {}",
        q.very_unhealthy_hours,
        q.covered_by_warning,
        100.0 * q.covered_by_warning as f64 / vu as f64,
        q.covered_by_any,
        100.0 * q.covered_by_any as f64 / vu as f64,
        q.median_lead_hours(),
        q.warning_episodes,
        q.warning_episodes_without_very_unhealthy,
        q.expired
    );
    // A person in no group is never messaged; diabetes is only in the heat rule.
    assert_eq!(q.per_year(NO_CATEGORY), (0.0, 0.0));
    let (da, dw) = q.per_year("diabetes");
    assert!(da + dw > 0.0 && da + dw < q.per_year("respiratory").0 + q.per_year("respiratory").1);
    // Warnings come before most very unhealthy hours, and every covered hour is also covered by
    // "any message".
    assert!(q.covered_by_warning <= q.covered_by_any && q.covered_by_any <= vu);
    assert!(
        q.covered_by_warning as f64 >= 0.8 * vu as f64,
        "{} of {vu}",
        q.covered_by_warning
    );
    // Episode by episode: most are warned before their first very unhealthy hour.
    eprintln!(
        "episodes reaching very unhealthy: {}; warned before the first such hour: {}",
        q.very_unhealthy_episodes,
        q.lead_hours.len()
    );
    assert!(q.lead_hours.len() * 4 >= q.very_unhealthy_episodes * 3);
}
