//! Circe JSON → [`Cohort`], refusing anything not understood with its JSON path.

use serde_json::{Map, Value};

use crate::CohortError;

#[derive(Clone, Debug, PartialEq)]
pub struct ConceptItem {
    pub concept_id: i64,
    pub descendants: bool,
    pub excluded: bool,
    /// Also the non-standard concepts that map ('Maps to') to it (and to its descendants).
    pub mapped: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConceptSet {
    pub id: i64,
    pub items: Vec<ConceptItem>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    ConditionOccurrence,
    ConditionEra,
    DrugExposure,
    DrugEra,
    ProcedureOccurrence,
    VisitOccurrence,
    Observation,
    Measurement,
    Death,
    ObservationPeriod,
    DeviceExposure,
    Specimen,
    VisitDetail,
    DoseEra,
    PayerPlanPeriod,
}

impl Domain {
    fn from_key(k: &str) -> Option<Domain> {
        Some(match k {
            "ConditionOccurrence" => Domain::ConditionOccurrence,
            "ConditionEra" => Domain::ConditionEra,
            "DrugExposure" => Domain::DrugExposure,
            "DrugEra" => Domain::DrugEra,
            "ProcedureOccurrence" => Domain::ProcedureOccurrence,
            "VisitOccurrence" => Domain::VisitOccurrence,
            "Observation" => Domain::Observation,
            "Measurement" => Domain::Measurement,
            "Death" => Domain::Death,
            "ObservationPeriod" => Domain::ObservationPeriod,
            "DeviceExposure" => Domain::DeviceExposure,
            "Specimen" => Domain::Specimen,
            "VisitDetail" => Domain::VisitDetail,
            "DoseEra" => Domain::DoseEra,
            "PayerPlanPeriod" => Domain::PayerPlanPeriod,
            _ => return None,
        })
    }
}

/// A comparison as Circe writes it: `{"Value": 40, "Op": "gte"}` (`bt`/`!bt` use `Extent`).
#[derive(Clone, Debug, PartialEq)]
pub struct Range<T> {
    pub op: String,
    pub value: T,
    pub extent: Option<T>,
}

/// A numeric range (ages, counts, values).
pub type NumRange = Range<f64>;
/// A date range (`OccurrenceStartDate` and the like); dates are days since 1970-01-01.
pub type DateRange = Range<i32>;

#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    pub domain: Domain,
    pub codeset: Option<i64>,
    pub first: bool,
    pub age: Option<NumRange>,
    pub gender: Vec<i64>,
    /// `ValueAsNumber` of a Measurement or Observation.
    pub value: Option<NumRange>,
    /// `Unit` concepts of a Measurement or Observation.
    pub unit: Vec<i64>,
    /// `<Domain>Type` concepts (the record's type concept), kept or, with `<Domain>TypeExclude`, dropped.
    pub types: Vec<i64>,
    pub types_exclude: bool,
    /// `<Domain>SourceConcept`: a concept set the record's source concept must be in.
    pub source_codeset: Option<i64>,
    /// `ConditionStatus` concepts of a condition occurrence.
    pub condition_status: Vec<i64>,
    /// Further attribute filters (`Quantity`, `EraLength`, `OccurrenceStartDate`, …).
    pub filters: Vec<Filter>,
    /// `UserDefinedPeriod` of an observation period: the event starts and ends on these dates, and
    /// only periods covering them qualify.
    pub user_period: (Option<i32>, Option<i32>),
    /// Criteria the record itself must satisfy, relative to its own dates (Circe's
    /// `CorrelatedCriteria` inside a criterion).
    pub correlated: Option<Box<Group>>,
    /// `DateAdjustment`: the event's start and end become the record's start or end plus an offset
    /// (age and date filters then see the adjusted dates; `First` still orders by the record's
    /// start), and records whose adjusted end precedes their start are dropped.
    pub date_adjustment: Option<DateAdjustment>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateAdjustment {
    pub start_from_end: bool,
    pub start_offset: i64,
    pub end_from_end: bool,
    pub end_offset: i64,
}

impl Criterion {
    /// This criterion and those nested in it, with their JSON paths (`path` is this one's).
    pub fn with_nested(&self, path: &str) -> Vec<(String, &Criterion)> {
        let mut out = vec![(path.to_string(), self)];
        if let Some(g) = &self.correlated {
            out.extend(g.criteria_paths(&format!("{path}.{:?}.CorrelatedCriteria", self.domain)));
        }
        out
    }
}

/// An attribute filter on a criterion's records. Expressions are over the record (`e.` its
/// columns, `e.s`/`e.e` its start and end days) and the person (`p.`).
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Num {
        expr: &'static str,
        range: NumRange,
        /// Circe compares integer attributes with the integer part of the bounds.
        integer: bool,
    },
    Date {
        expr: &'static str,
        range: DateRange,
    },
    Concepts {
        col: &'static str,
        ids: Vec<i64>,
    },
    /// The record's visit is of one of these visit concepts.
    VisitType(Vec<i64>),
}

/// How a Circe attribute of a domain filters (None: not a known attribute).
enum AttrKind {
    Num(&'static str, bool),
    Date(&'static str),
    Concepts(&'static str),
}

const AGE_AT_START: &str = "(EXTRACT(YEAR FROM CAST(e.s AS DATE)) - p.year_of_birth)";
const AGE_AT_END: &str = "(EXTRACT(YEAR FROM CAST(e.e AS DATE)) - p.year_of_birth)";
const LENGTH: &str = "(e.e - e.s)";

/// Circe's plain attribute filters, by domain: numeric ranges, date ranges and concept lists.
fn attribute(d: Domain, key: &str) -> Option<AttrKind> {
    use AttrKind::*;
    use Domain::*;
    Some(match (d, key) {
        (
            ConditionOccurrence | DrugExposure | ProcedureOccurrence | Observation | Measurement
            | VisitOccurrence | DeviceExposure | Specimen | Death,
            "OccurrenceStartDate",
        ) => Date("e.s"),
        // The criterion's end date with Circe's defaults (a drug's from its days supply, …).
        (
            ConditionOccurrence | DrugExposure | VisitOccurrence | DeviceExposure,
            "OccurrenceEndDate",
        ) => Date("e.e"),
        (VisitDetail, "VisitDetailStartDate") => Date("e.s"),
        (VisitDetail, "VisitDetailEndDate") => Date("e.e"),
        (VisitDetail | VisitOccurrence, "VisitLength" | "VisitDetailLength") => Num(LENGTH, true),
        (ConditionEra | DrugEra | DoseEra, "EraStartDate") => Date("e.s"),
        (ConditionEra | DrugEra | DoseEra, "EraEndDate") => Date("e.e"),
        (ConditionEra | DrugEra | DoseEra, "EraLength") => Num(LENGTH, true),
        (ObservationPeriod | PayerPlanPeriod, "PeriodStartDate") => Date("e.s"),
        (ObservationPeriod | PayerPlanPeriod, "PeriodEndDate") => Date("e.e"),
        (ObservationPeriod | PayerPlanPeriod, "PeriodLength") => Num(LENGTH, true),
        (ConditionEra | DrugEra | DoseEra | ObservationPeriod | PayerPlanPeriod, "AgeAtStart") => {
            Num(AGE_AT_START, true)
        }
        (ConditionEra | DrugEra | DoseEra | ObservationPeriod | PayerPlanPeriod, "AgeAtEnd") => {
            Num(AGE_AT_END, true)
        }
        (ConditionEra, "OccurrenceCount") => Num("e.condition_occurrence_count", true),
        (DrugEra, "OccurrenceCount") => Num("e.drug_exposure_count", true),
        (DrugEra, "GapDays") => Num("e.gap_days", true),
        (DoseEra, "DoseValue") => Num("e.dose_value", false),
        (DoseEra | Specimen, "Unit") => Concepts("e.unit_concept_id"),
        (DrugExposure, "Quantity") => Num("e.quantity", false),
        (DrugExposure, "Refills") => Num("e.refills", true),
        (DrugExposure, "DaysSupply") => Num("e.days_supply", true),
        (DrugExposure, "RouteConcept") => Concepts("e.route_concept_id"),
        (Measurement, "Operator") => Concepts("e.operator_concept_id"),
        (Measurement | Observation, "ValueAsConcept") => Concepts("e.value_as_concept_id"),
        (Measurement, "RangeLow") => Num("e.range_low", false),
        (Measurement, "RangeHigh") => Num("e.range_high", false),
        (Measurement, "RangeLowRatio") => {
            Num("(e.value_as_number / NULLIF(e.range_low, 0))", false)
        }
        (Measurement, "RangeHighRatio") => {
            Num("(e.value_as_number / NULLIF(e.range_high, 0))", false)
        }
        (Observation, "Qualifier") => Concepts("e.qualifier_concept_id"),
        (ProcedureOccurrence, "Modifier") => Concepts("e.modifier_concept_id"),
        (ProcedureOccurrence | DeviceExposure, "Quantity") => Num("e.quantity", true),
        (Specimen, "Quantity") => Num("e.quantity", false),
        (Specimen, "AnatomicSite") => Concepts("e.anatomic_site_concept_id"),
        (Specimen, "DiseaseStatus") => Concepts("e.disease_status_concept_id"),
        _ => return None,
    })
}

impl Domain {
    /// The Circe attribute prefix of the type concept filter (`ConditionType`, …), if the domain has one.
    pub fn type_key(self) -> Option<&'static str> {
        Some(match self {
            Domain::ConditionOccurrence => "ConditionType",
            Domain::DrugExposure => "DrugType",
            Domain::ProcedureOccurrence => "ProcedureType",
            Domain::VisitOccurrence => "VisitType",
            Domain::Observation => "ObservationType",
            Domain::Measurement => "MeasurementType",
            Domain::Death => "DeathType",
            Domain::DeviceExposure => "DeviceType",
            Domain::Specimen => "SpecimenType",
            Domain::VisitDetail => "VisitDetailType",
            _ => return None,
        })
    }

    /// The Circe attribute naming a concept set on the record's source concept
    /// (`ConditionSourceConcept`, …), if the domain has one.
    pub fn source_key(self) -> Option<&'static str> {
        Some(match self {
            Domain::ConditionOccurrence => "ConditionSourceConcept",
            Domain::DrugExposure => "DrugSourceConcept",
            Domain::ProcedureOccurrence => "ProcedureSourceConcept",
            Domain::VisitOccurrence => "VisitSourceConcept",
            Domain::Observation => "ObservationSourceConcept",
            Domain::Measurement => "MeasurementSourceConcept",
            Domain::Death => "DeathSourceConcept",
            Domain::DeviceExposure => "DeviceSourceConcept",
            Domain::VisitDetail => "VisitDetailSourceConcept",
            _ => return None,
        })
    }

    /// Whether a `CodesetId` applies (Circe has none for observation and payer plan periods).
    pub fn has_codeset(self) -> bool {
        !matches!(self, Domain::ObservationPeriod | Domain::PayerPlanPeriod)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    All,
    First,
    Last,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndStrategy {
    ObservationEnd,
    /// Offset in days from the event's start (`false`) or end (`true`) date.
    DateOffset {
        from_end: bool,
        offset: i64,
    },
    /// End of the continuous exposure (drugs of `codeset`, gaps of up to `gap` days bridged) that
    /// contains the event's start, plus `offset` days.
    CustomEra {
        codeset: i64,
        gap: i64,
        offset: i64,
        /// Every exposure lasts this many days, whatever its recorded end.
        days_supply_override: Option<i64>,
    },
}

/// One side of a window: `Coeff` × `Days` from the index date; `None` days is unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub coeff: i64,
    pub days: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Bound,
    pub end: Bound,
    pub use_index_end: bool,
    pub use_event_end: bool,
}

/// What an `IsDistinct` occurrence count counts (Circe's `CountColumn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountColumn {
    /// The record's concept (Circe's default).
    DomainConcept,
    StartDate,
    VisitId,
}

/// A criterion evaluated relative to an index event, with an occurrence count.
#[derive(Clone, Debug, PartialEq)]
pub struct Correlated {
    pub criterion: Criterion,
    pub window: Window,
    /// Bounds on the event's end date (its start with `UseEventEnd: false`).
    pub end_window: Option<Window>,
    pub restrict_visit: bool,
    pub ignore_observation_period: bool,
    /// 0 exactly, 1 at most, 2 at least.
    pub occurrence: i64,
    pub count: i64,
    /// Count distinct values of a column rather than events.
    pub distinct: Option<CountColumn>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Demographic {
    pub age: Option<NumRange>,
    pub gender: Vec<i64>,
    pub race: Vec<i64>,
    pub ethnicity: Vec<i64>,
    /// Bounds on the index event's start and end dates.
    pub start: Option<DateRange>,
    pub end: Option<DateRange>,
}

/// How many of a group's items (criteria, demographic criteria, subgroups) must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupType {
    All,
    Any,
    AtLeast(i64),
    AtMost(i64),
}

/// A criteria group, possibly nested.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub kind: GroupType,
    pub criteria: Vec<Correlated>,
    pub demographics: Vec<Demographic>,
    pub groups: Vec<Group>,
}

impl Group {
    /// Every criterion of the group and its subgroups, with its JSON path under `path`.
    pub fn criteria_paths(&self, path: &str) -> Vec<(String, &Criterion)> {
        let mut out = Vec::new();
        for (i, cc) in self.criteria.iter().enumerate() {
            out.extend(
                cc.criterion
                    .with_nested(&format!("{path}.CriteriaList[{i}].Criteria")),
            );
        }
        for (j, g) in self.groups.iter().enumerate() {
            out.extend(g.criteria_paths(&format!("{path}.Groups[{j}]")));
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cohort {
    pub concept_sets: Vec<ConceptSet>,
    pub primary: Vec<Criterion>,
    pub prior_days: i64,
    pub post_days: i64,
    pub primary_limit: Limit,
    /// Qualifying criteria applied to the primary events (Circe's `AdditionalCriteria`).
    pub additional: Option<Group>,
    /// Every rule must hold.
    pub inclusion: Vec<Group>,
    /// An entry ends at the first of these events on or after its start.
    pub censoring: Vec<Criterion>,
    /// Applied after the additional criteria; Circe ignores it when there are none.
    pub qualified_limit: Limit,
    pub expression_limit: Limit,
    pub end: EndStrategy,
    pub era_pad: i64,
    /// Circe's `CensorWindow`: entries are clipped to these dates after collapsing.
    pub censor_start: Option<i32>,
    pub censor_end: Option<i32>,
}

fn unsupported(path: &str, what: impl Into<String>) -> CohortError {
    CohortError::Unsupported {
        path: path.to_string(),
        what: what.into(),
    }
}

fn invalid(path: &str, message: impl Into<String>) -> CohortError {
    CohortError::Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, CohortError> {
    v.as_object()
        .ok_or_else(|| invalid(path, "must be an object"))
}

fn int(v: &Value, path: &str) -> Result<i64, CohortError> {
    v.as_i64()
        .ok_or_else(|| invalid(path, "must be an integer"))
}

fn limit(v: Option<&Value>, path: &str) -> Result<Limit, CohortError> {
    let Some(v) = v else { return Ok(Limit::All) };
    let o = obj(v, path)?;
    for k in o.keys() {
        if k != "Type" {
            return Err(unsupported(&format!("{path}.{k}"), "unknown limit field"));
        }
    }
    match o.get("Type").and_then(Value::as_str) {
        None | Some("All") => Ok(Limit::All),
        Some("First") => Ok(Limit::First),
        Some("Last") => Ok(Limit::Last),
        Some(t) => Err(invalid(
            &format!("{path}.Type"),
            format!("unknown limit {t:?}"),
        )),
    }
}

/// A range whose `Value` and `Extent` are read by `parse` (numbers or dates).
fn range<T>(
    v: &Value,
    path: &str,
    parse: impl Fn(&Value, &str) -> Result<T, CohortError>,
) -> Result<Range<T>, CohortError> {
    let o = obj(v, path)?;
    for k in o.keys() {
        if !matches!(k.as_str(), "Value" | "Op" | "Extent") {
            return Err(unsupported(&format!("{path}.{k}"), "unknown range field"));
        }
    }
    let op = o
        .get("Op")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{path}.Op"), "missing"))?
        .to_string();
    if !matches!(
        op.as_str(),
        "lt" | "lte" | "eq" | "!eq" | "gt" | "gte" | "bt" | "!bt"
    ) {
        return Err(invalid(
            &format!("{path}.Op"),
            format!("unknown operator {op:?}"),
        ));
    }
    let value = parse(
        o.get("Value").unwrap_or(&Value::Null),
        &format!("{path}.Value"),
    )?;
    let extent = match o.get("Extent") {
        None | Some(Value::Null) => None,
        Some(e) => Some(parse(e, &format!("{path}.Extent"))?),
    };
    if op.ends_with("bt") && extent.is_none() {
        return Err(invalid(
            &format!("{path}.Extent"),
            "a between range needs Extent",
        ));
    }
    Ok(Range { op, value, extent })
}

fn num_range(v: &Value, path: &str) -> Result<NumRange, CohortError> {
    range(v, path, |v, p| {
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| invalid(p, "must be a number"))
    })
}

fn date_range(v: &Value, path: &str) -> Result<DateRange, CohortError> {
    range(v, path, date_days)
}

/// A Circe concept list `[{"CONCEPT_ID": …}, …]`.
fn concept_ids(v: &Value, path: &str) -> Result<Vec<i64>, CohortError> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid(path, "must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let id = c
            .get("CONCEPT_ID")
            .ok_or_else(|| invalid(&format!("{path}[{i}]"), "missing CONCEPT_ID"))?;
        out.push(int(id, &format!("{path}[{i}].CONCEPT_ID"))?);
    }
    Ok(out)
}

fn criterion(v: &Value, path: &str) -> Result<Criterion, CohortError> {
    let o = obj(v, path)?;
    if o.len() != 1 {
        return Err(invalid(path, "a criterion has exactly one type key"));
    }
    let (key, body) = o.iter().next().expect("one key");
    let p = format!("{path}.{key}");
    let domain =
        Domain::from_key(key).ok_or_else(|| unsupported(&p, format!("criterion type {key}")))?;
    let b = obj(body, &p)?;
    let mut c = Criterion {
        domain,
        codeset: None,
        first: false,
        age: None,
        gender: Vec::new(),
        value: None,
        unit: Vec::new(),
        types: Vec::new(),
        types_exclude: false,
        source_codeset: None,
        condition_status: Vec::new(),
        filters: Vec::new(),
        user_period: (None, None),
        correlated: None,
        date_adjustment: None,
    };
    let type_key = domain.type_key().unwrap_or("");
    let source_key = domain.source_key().unwrap_or("");
    let type_exclude_key = format!("{type_key}Exclude");
    let valued = matches!(domain, Domain::Measurement | Domain::Observation);
    for (k, v) in b {
        let kp = format!("{p}.{k}");
        match k.as_str() {
            "CodesetId" if domain.has_codeset() => {
                c.codeset = if v.is_null() {
                    None
                } else {
                    Some(int(v, &kp)?)
                }
            }
            k if !source_key.is_empty() && k == source_key => {
                c.source_codeset = if v.is_null() {
                    None
                } else {
                    Some(int(v, &kp)?)
                }
            }
            "ConditionStatus" if domain == Domain::ConditionOccurrence => {
                c.condition_status.extend(concept_ids(v, &kp)?);
            }
            "CorrelatedCriteria" => {
                if !v.is_null() {
                    c.correlated = Some(Box::new(group(v, &kp)?));
                }
            }
            "DateAdjustment" if !v.is_null() => {
                let o = obj(v, &kp)?;
                let which = |k: &str, default_end: bool| -> Result<bool, CohortError> {
                    match o.get(k).and_then(Value::as_str) {
                        None => Ok(default_end),
                        Some("START_DATE") => Ok(false),
                        Some("END_DATE") => Ok(true),
                        Some(x) => Err(invalid(
                            &format!("{kp}.{k}"),
                            format!("{x:?} is neither START_DATE nor END_DATE"),
                        )),
                    }
                };
                let offset = |k: &str| -> Result<i64, CohortError> {
                    o.get(k)
                        .map(|x| int(x, &format!("{kp}.{k}")))
                        .transpose()
                        .map(|x| x.unwrap_or(0))
                };
                for k in o.keys() {
                    if !matches!(
                        k.as_str(),
                        "StartWith" | "StartOffset" | "EndWith" | "EndOffset"
                    ) {
                        return Err(unsupported(&format!("{kp}.{k}"), "date adjustment field"));
                    }
                }
                c.date_adjustment = Some(DateAdjustment {
                    start_from_end: which("StartWith", false)?,
                    start_offset: offset("StartOffset")?,
                    end_from_end: which("EndWith", true)?,
                    end_offset: offset("EndOffset")?,
                });
            }
            "VisitType"
                if matches!(
                    domain,
                    Domain::ConditionOccurrence
                        | Domain::DrugExposure
                        | Domain::ProcedureOccurrence
                        | Domain::Observation
                        | Domain::Measurement
                        | Domain::DeviceExposure
                ) =>
            {
                let ids = concept_ids(v, &kp)?;
                if !ids.is_empty() {
                    c.filters.push(Filter::VisitType(ids));
                }
            }
            "UserDefinedPeriod" if domain == Domain::ObservationPeriod => {
                for (uk, uv) in obj(v, &kp)? {
                    let ukp = format!("{kp}.{uk}");
                    match uk.as_str() {
                        _ if uv.is_null() => {}
                        "StartDate" => c.user_period.0 = Some(date_days(uv, &ukp)?),
                        "EndDate" => c.user_period.1 = Some(date_days(uv, &ukp)?),
                        _ => return Err(unsupported(&ukp, format!("period field {uk}"))),
                    }
                }
            }
            k if attribute(domain, k).is_some() => {
                if v.is_null() {
                    continue;
                }
                c.filters
                    .push(match attribute(domain, k).expect("checked") {
                        AttrKind::Num(expr, integer) => Filter::Num {
                            expr,
                            range: num_range(v, &kp)?,
                            integer,
                        },
                        AttrKind::Date(expr) => Filter::Date {
                            expr,
                            range: date_range(v, &kp)?,
                        },
                        AttrKind::Concepts(col) => Filter::Concepts {
                            col,
                            ids: concept_ids(v, &kp)?,
                        },
                    });
            }
            "First" => {
                c.first = v
                    .as_bool()
                    .ok_or_else(|| invalid(&kp, "must be true or false"))?
            }
            "Age" => {
                c.age = if v.is_null() {
                    None
                } else {
                    Some(num_range(v, &kp)?)
                }
            }
            "Gender" => {
                c.gender.extend(concept_ids(v, &kp)?);
            }
            k if !type_key.is_empty() && k == type_key => {
                c.types.extend(concept_ids(v, &kp)?);
            }
            k if !type_key.is_empty() && k == type_exclude_key => {
                c.types_exclude = v
                    .as_bool()
                    .ok_or_else(|| invalid(&kp, "must be true or false"))?
            }
            "ValueAsNumber" if valued => {
                c.value = if v.is_null() {
                    None
                } else {
                    Some(num_range(v, &kp)?)
                }
            }
            "Unit" if valued => {
                c.unit.extend(concept_ids(v, &kp)?);
            }
            _ => return Err(unsupported(&kp, format!("criterion attribute {k}"))),
        }
    }
    Ok(c)
}

fn bound(v: Option<&Value>, path: &str) -> Result<Bound, CohortError> {
    let Some(v) = v else {
        return Ok(Bound {
            coeff: 1,
            days: None,
        });
    };
    let o = obj(v, path)?;
    for k in o.keys() {
        if !matches!(k.as_str(), "Coeff" | "Days") {
            return Err(unsupported(&format!("{path}.{k}"), "unknown window field"));
        }
    }
    Ok(Bound {
        coeff: o
            .get("Coeff")
            .map(|x| int(x, &format!("{path}.Coeff")))
            .transpose()?
            .unwrap_or(1),
        days: match o.get("Days") {
            None | Some(Value::Null) => None,
            Some(d) => Some(int(d, &format!("{path}.Days"))?),
        },
    })
}

/// A window; `event_end_default` is what a missing (or null) `UseEventEnd` means: false for a start
/// window, true for an end window (Circe keeps that for backwards compatibility).
fn window(v: &Value, path: &str, event_end_default: bool) -> Result<Window, CohortError> {
    let o = obj(v, path)?;
    let flag = |k: &str, d: bool| o.get(k).and_then(Value::as_bool).unwrap_or(d);
    for k in o.keys() {
        if !matches!(k.as_str(), "Start" | "End" | "UseIndexEnd" | "UseEventEnd") {
            return Err(unsupported(&format!("{path}.{k}"), "unknown window field"));
        }
    }
    Ok(Window {
        start: bound(o.get("Start"), &format!("{path}.Start"))?,
        end: bound(o.get("End"), &format!("{path}.End"))?,
        use_index_end: flag("UseIndexEnd", false),
        use_event_end: flag("UseEventEnd", event_end_default),
    })
}

fn correlated(c: &Value, cp: &str) -> Result<Correlated, CohortError> {
    let co = obj(c, cp)?;
    let crit = co
        .get("Criteria")
        .ok_or_else(|| invalid(&format!("{cp}.Criteria"), "missing"))?;
    let mut cc = Correlated {
        criterion: criterion(crit, &format!("{cp}.Criteria"))?,
        window: Window {
            start: Bound {
                coeff: -1,
                days: None,
            },
            end: Bound {
                coeff: 1,
                days: None,
            },
            use_index_end: false,
            use_event_end: false,
        },
        end_window: None,
        restrict_visit: false,
        ignore_observation_period: false,
        occurrence: 2,
        count: 1,
        distinct: None,
    };
    for (ck, cv) in co {
        let ckp = format!("{cp}.{ck}");
        match ck.as_str() {
            "Criteria" => {}
            "StartWindow" => cc.window = window(cv, &ckp, false)?,
            "EndWindow" => {
                cc.end_window = match cv {
                    Value::Null => None,
                    Value::Object(o) if o.is_empty() => None,
                    _ => Some(window(cv, &ckp, true)?),
                }
            }
            "RestrictVisit" => cc.restrict_visit = cv.as_bool().unwrap_or(false),
            "IgnoreObservationPeriod" => {
                cc.ignore_observation_period = cv.as_bool().unwrap_or(false)
            }
            "Occurrence" => {
                let oo = obj(cv, &ckp)?;
                for ok in oo.keys() {
                    if !matches!(ok.as_str(), "Type" | "Count" | "IsDistinct" | "CountColumn") {
                        return Err(unsupported(&format!("{ckp}.{ok}"), "occurrence field"));
                    }
                }
                cc.occurrence = int(
                    oo.get("Type").unwrap_or(&Value::Null),
                    &format!("{ckp}.Type"),
                )?;
                if !(0..=2).contains(&cc.occurrence) {
                    return Err(invalid(
                        &format!("{ckp}.Type"),
                        "must be 0 (exactly), 1 (at most) or 2 (at least)",
                    ));
                }
                cc.count = int(
                    oo.get("Count").unwrap_or(&Value::Null),
                    &format!("{ckp}.Count"),
                )?;
                if oo
                    .get("IsDistinct")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                {
                    cc.distinct = Some(match oo.get("CountColumn") {
                        None | Some(Value::Null) => CountColumn::DomainConcept,
                        Some(v) => match v.as_str() {
                            Some("DOMAIN_CONCEPT") => CountColumn::DomainConcept,
                            Some("START_DATE") => CountColumn::StartDate,
                            Some("VISIT_ID") => CountColumn::VisitId,
                            other => {
                                return Err(unsupported(
                                    &format!("{ckp}.CountColumn"),
                                    format!("distinct count of {other:?}"),
                                ))
                            }
                        },
                    });
                }
            }
            _ => {
                return Err(unsupported(
                    &ckp,
                    format!("correlated criterion field {ck}"),
                ))
            }
        }
    }
    Ok(cc)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, checked.
fn date_days(v: &Value, path: &str) -> Result<i32, CohortError> {
    let s = v
        .as_str()
        .ok_or_else(|| invalid(path, "must be a date YYYY-MM-DD"))?;
    let bad = || invalid(path, format!("{s:?} is not a date YYYY-MM-DD"));
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: i64 = parts[1].parse().map_err(|_| bad())?;
    let d: i64 = parts[2].parse().map_err(|_| bad())?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || d < 1
        || d > month_days[(m - 1) as usize]
    {
        return Err(bad());
    }
    // Days from civil (proleptic Gregorian), as in H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) as i32)
}

fn demographic(d: &Value, dp: &str) -> Result<Demographic, CohortError> {
    let mut demo = Demographic {
        age: None,
        gender: Vec::new(),
        race: Vec::new(),
        ethnicity: Vec::new(),
        start: None,
        end: None,
    };
    for (dk, dv) in obj(d, dp)? {
        let dkp = format!("{dp}.{dk}");
        if dv.is_null() {
            continue;
        }
        match dk.as_str() {
            "Age" => demo.age = Some(num_range(dv, &dkp)?),
            "Gender" => demo.gender.extend(concept_ids(dv, &dkp)?),
            "Race" => demo.race.extend(concept_ids(dv, &dkp)?),
            "Ethnicity" => demo.ethnicity.extend(concept_ids(dv, &dkp)?),
            "OccurrenceStartDate" => demo.start = Some(date_range(dv, &dkp)?),
            "OccurrenceEndDate" => demo.end = Some(date_range(dv, &dkp)?),
            _ => return Err(unsupported(&dkp, format!("demographic criterion {dk}"))),
        }
    }
    Ok(demo)
}

fn group(v: &Value, path: &str) -> Result<Group, CohortError> {
    let o = obj(v, path)?;
    let mut g = Group {
        kind: GroupType::All,
        criteria: Vec::new(),
        demographics: Vec::new(),
        groups: Vec::new(),
    };
    let count = match o.get("Count") {
        None | Some(Value::Null) => None,
        Some(c) => Some(int(c, &format!("{path}.Count"))?),
    };
    for (k, v) in o {
        let kp = format!("{path}.{k}");
        match k.as_str() {
            "Type" => {
                let need = || {
                    count.filter(|c| *c >= 0).ok_or_else(|| {
                        invalid(
                            &format!("{path}.Count"),
                            "AT_LEAST and AT_MOST need a Count of 0 or more",
                        )
                    })
                };
                g.kind = match v.as_str() {
                    Some("ALL") => GroupType::All,
                    Some("ANY") => GroupType::Any,
                    Some("AT_LEAST") => GroupType::AtLeast(need()?),
                    Some("AT_MOST") => GroupType::AtMost(need()?),
                    other => return Err(unsupported(&kp, format!("group type {other:?}"))),
                }
            }
            "Count" => {}
            "Groups" => {
                for (i, sub) in v
                    .as_array()
                    .ok_or_else(|| invalid(&kp, "must be a list"))?
                    .iter()
                    .enumerate()
                {
                    g.groups.push(group(sub, &format!("{kp}[{i}]"))?);
                }
            }
            "CriteriaList" => {
                for (i, c) in v
                    .as_array()
                    .ok_or_else(|| invalid(&kp, "must be a list"))?
                    .iter()
                    .enumerate()
                {
                    g.criteria.push(correlated(c, &format!("{kp}[{i}]"))?);
                }
            }
            "DemographicCriteriaList" => {
                for (i, d) in v
                    .as_array()
                    .ok_or_else(|| invalid(&kp, "must be a list"))?
                    .iter()
                    .enumerate()
                {
                    g.demographics.push(demographic(d, &format!("{kp}[{i}]"))?);
                }
            }
            _ => return Err(unsupported(&kp, format!("group element {k}"))),
        }
    }
    Ok(g)
}

fn concept_sets(v: Option<&Value>) -> Result<Vec<ConceptSet>, CohortError> {
    let mut out = Vec::new();
    let Some(v) = v else { return Ok(out) };
    let list = v
        .as_array()
        .ok_or_else(|| invalid("$.ConceptSets", "must be a list"))?;
    for (i, cs) in list.iter().enumerate() {
        let p = format!("$.ConceptSets[{i}]");
        let o = obj(cs, &p)?;
        let id = int(o.get("id").unwrap_or(&Value::Null), &format!("{p}.id"))?;
        let items = o
            .get("expression")
            .and_then(|e| e.get("items"))
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(&format!("{p}.expression.items"), "must be a list"))?;
        let mut set = ConceptSet {
            id,
            items: Vec::new(),
        };
        for (j, it) in items.iter().enumerate() {
            let ip = format!("{p}.expression.items[{j}]");
            let io = obj(it, &ip)?;
            let flag = |k: &str| io.get(k).and_then(Value::as_bool).unwrap_or(false);
            let cid = io
                .get("concept")
                .and_then(|c| c.get("CONCEPT_ID"))
                .ok_or_else(|| invalid(&format!("{ip}.concept.CONCEPT_ID"), "missing"))?;
            set.items.push(ConceptItem {
                concept_id: int(cid, &format!("{ip}.concept.CONCEPT_ID"))?,
                descendants: flag("includeDescendants"),
                excluded: flag("isExcluded"),
                mapped: flag("includeMapped"),
            });
        }
        out.push(set);
    }
    Ok(out)
}

/// Parse a Circe cohort expression (the JSON ATLAS exports).
pub fn parse(text: &str) -> Result<Cohort, CohortError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| invalid("$", format!("not JSON: {e}")))?;
    let o = obj(&v, "$")?;
    for k in o.keys() {
        match k.as_str() {
            "Title" | "title" | "description" | "Description" | "cdmVersionRange"
            | "ConceptSets" | "PrimaryCriteria" | "QualifiedLimit" | "ExpressionLimit"
            | "InclusionRules" | "EndStrategy" | "CensoringCriteria" | "CollapseSettings"
            | "CensorWindow" | "AdditionalCriteria" => {}
            other => {
                return Err(unsupported(
                    &format!("$.{other}"),
                    "unknown top-level element",
                ))
            }
        }
    }
    let additional = match o.get("AdditionalCriteria") {
        None | Some(Value::Null) => None,
        Some(g) => Some(group(g, "$.AdditionalCriteria")?),
    };
    let mut inclusion = Vec::new();
    if let Some(rules) = o.get("InclusionRules") {
        let rules = rules
            .as_array()
            .ok_or_else(|| invalid("$.InclusionRules", "must be a list"))?;
        for (i, r) in rules.iter().enumerate() {
            let rp = format!("$.InclusionRules[{i}]");
            let ro = obj(r, &rp)?;
            for k in ro.keys() {
                if !matches!(k.as_str(), "name" | "description" | "expression") {
                    return Err(unsupported(&format!("{rp}.{k}"), "inclusion rule field"));
                }
            }
            let e = ro
                .get("expression")
                .ok_or_else(|| invalid(&format!("{rp}.expression"), "missing"))?;
            inclusion.push(group(e, &format!("{rp}.expression"))?);
        }
    }
    let mut censoring = Vec::new();
    if let Some(c) = o.get("CensoringCriteria") {
        let list = c
            .as_array()
            .ok_or_else(|| invalid("$.CensoringCriteria", "must be a list"))?;
        for (i, cr) in list.iter().enumerate() {
            censoring.push(criterion(cr, &format!("$.CensoringCriteria[{i}]"))?);
        }
    }
    let (mut censor_start, mut censor_end) = (None, None);
    if let Some(cw) = o.get("CensorWindow").filter(|v| !v.is_null()) {
        for (k, v) in obj(cw, "$.CensorWindow")? {
            let kp = format!("$.CensorWindow.{k}");
            match k.as_str() {
                "StartDate" if !v.is_null() => censor_start = Some(date_days(v, &kp)?),
                "EndDate" if !v.is_null() => censor_end = Some(date_days(v, &kp)?),
                "StartDate" | "EndDate" => {}
                _ => return Err(unsupported(&kp, format!("censor window field {k}"))),
            }
        }
    }
    let pc = obj(
        o.get("PrimaryCriteria")
            .ok_or_else(|| invalid("$.PrimaryCriteria", "missing"))?,
        "$.PrimaryCriteria",
    )?;
    let mut primary = Vec::new();
    let (mut prior_days, mut post_days, mut primary_limit) = (0, 0, Limit::All);
    for (k, v) in pc {
        let p = format!("$.PrimaryCriteria.{k}");
        match k.as_str() {
            "CriteriaList" => {
                for (i, c) in v
                    .as_array()
                    .ok_or_else(|| invalid(&p, "must be a list"))?
                    .iter()
                    .enumerate()
                {
                    primary.push(criterion(c, &format!("{p}[{i}]"))?);
                }
            }
            "ObservationWindow" => {
                let w = obj(v, &p)?;
                prior_days = w
                    .get("PriorDays")
                    .map(|x| int(x, &format!("{p}.PriorDays")))
                    .transpose()?
                    .unwrap_or(0);
                post_days = w
                    .get("PostDays")
                    .map(|x| int(x, &format!("{p}.PostDays")))
                    .transpose()?
                    .unwrap_or(0);
            }
            "PrimaryCriteriaLimit" => primary_limit = limit(Some(v), &p)?,
            _ => return Err(unsupported(&p, format!("primary criteria element {k}"))),
        }
    }
    if primary.is_empty() {
        return Err(invalid(
            "$.PrimaryCriteria.CriteriaList",
            "needs at least one criterion",
        ));
    }
    let end = match o.get("EndStrategy") {
        None | Some(Value::Null) => EndStrategy::ObservationEnd,
        Some(e) => {
            let eo = obj(e, "$.EndStrategy")?;
            match eo.iter().next() {
                None => EndStrategy::ObservationEnd,
                Some((k, body)) if k == "DateOffset" && eo.len() == 1 => {
                    let b = obj(body, "$.EndStrategy.DateOffset")?;
                    let from_end = match b.get("DateField").and_then(Value::as_str) {
                        Some("StartDate") => false,
                        Some("EndDate") => true,
                        _ => {
                            return Err(invalid(
                                "$.EndStrategy.DateOffset.DateField",
                                "must be StartDate or EndDate",
                            ))
                        }
                    };
                    let offset = int(
                        b.get("Offset").unwrap_or(&Value::Null),
                        "$.EndStrategy.DateOffset.Offset",
                    )?;
                    EndStrategy::DateOffset { from_end, offset }
                }
                Some((k, body)) if k == "CustomEra" && eo.len() == 1 => {
                    let b = obj(body, "$.EndStrategy.CustomEra")?;
                    for key in b.keys() {
                        if !matches!(
                            key.as_str(),
                            "DrugCodesetId" | "GapDays" | "Offset" | "DaysSupplyOverride"
                        ) {
                            return Err(unsupported(
                                &format!("$.EndStrategy.CustomEra.{key}"),
                                format!("custom era field {key}"),
                            ));
                        }
                    }
                    let get = |k: &str| {
                        b.get(k)
                            .map(|x| int(x, &format!("$.EndStrategy.CustomEra.{k}")))
                            .transpose()
                    };
                    EndStrategy::CustomEra {
                        codeset: get("DrugCodesetId")?.ok_or_else(|| {
                            invalid("$.EndStrategy.CustomEra.DrugCodesetId", "missing")
                        })?,
                        gap: get("GapDays")?.unwrap_or(0),
                        offset: get("Offset")?.unwrap_or(0),
                        days_supply_override: get("DaysSupplyOverride")?,
                    }
                }
                Some((k, _)) => {
                    return Err(unsupported(
                        &format!("$.EndStrategy.{k}"),
                        format!("end strategy {k}"),
                    ))
                }
            }
        }
    };
    let era_pad = match o.get("CollapseSettings") {
        None | Some(Value::Null) => 0,
        Some(c) => {
            let co = obj(c, "$.CollapseSettings")?;
            if let Some(t) = co.get("CollapseType").and_then(Value::as_str) {
                if t != "ERA" {
                    return Err(unsupported(
                        "$.CollapseSettings.CollapseType",
                        format!("collapse type {t}"),
                    ));
                }
            }
            co.get("EraPad")
                .map(|x| int(x, "$.CollapseSettings.EraPad"))
                .transpose()?
                .unwrap_or(0)
        }
    };
    let cohort = Cohort {
        concept_sets: concept_sets(o.get("ConceptSets"))?,
        primary,
        prior_days,
        post_days,
        primary_limit,
        additional,
        inclusion,
        censoring,
        qualified_limit: limit(o.get("QualifiedLimit"), "$.QualifiedLimit")?,
        expression_limit: limit(o.get("ExpressionLimit"), "$.ExpressionLimit")?,
        end,
        era_pad,
        censor_start,
        censor_end,
    };
    if let EndStrategy::CustomEra { codeset, .. } = cohort.end {
        if !cohort.concept_sets.iter().any(|s| s.id == codeset) {
            return Err(invalid(
                "$.EndStrategy.CustomEra.DrugCodesetId",
                format!("{codeset} names no concept set"),
            ));
        }
    }
    // Every CodesetId must name a concept set, wherever the criterion sits.
    let mut refs: Vec<(String, &Criterion)> = Vec::new();
    for (i, c) in cohort.primary.iter().enumerate() {
        refs.extend(c.with_nested(&format!("$.PrimaryCriteria.CriteriaList[{i}]")));
    }
    let groups = cohort
        .additional
        .iter()
        .map(|g| ("$.AdditionalCriteria".to_string(), g))
        .chain(
            cohort
                .inclusion
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("$.InclusionRules[{i}].expression"), g)),
        );
    for (gp, g) in groups {
        refs.extend(g.criteria_paths(&gp));
    }
    for (i, c) in cohort.censoring.iter().enumerate() {
        refs.extend(c.with_nested(&format!("$.CensoringCriteria[{i}]")));
    }
    for (path, c) in refs {
        for id in c.codeset.iter().chain(c.source_codeset.iter()) {
            if !cohort.concept_sets.iter().any(|s| s.id == *id) {
                return Err(invalid(
                    &path,
                    format!("concept set {id} is not defined in $.ConceptSets"),
                ));
            }
        }
    }
    Ok(cohort)
}
