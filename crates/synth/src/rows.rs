//! Column buffers for the CDM tables one site receives, filled positionally in the official field
//! order (checked against the spec in tests) and turned into Arrow record batches.

use arrow::record_batch::RecordBatch;
use medfed_cdm::value::{ColumnBuilder, Value};
use medfed_cdm::{CdmError, CdmSpec, TableSpec};

/// Tables the generator fills, in a fixed order (index = position in [`SiteRows::tables`]).
pub const TABLES: [&str; 11] = [
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "measurement",
    "observation",
    "death",
    "payer_plan_period",
    "condition_era",
    "drug_era",
];

pub const PERSON: usize = 0;
pub const OBS_PERIOD: usize = 1;
pub const VISIT: usize = 2;
pub const CONDITION: usize = 3;
pub const DRUG: usize = 4;
pub const MEASUREMENT: usize = 5;
pub const OBSERVATION: usize = 6;
pub const DEATH: usize = 7;
pub const PAYER: usize = 8;
pub const CONDITION_ERA: usize = 9;
pub const DRUG_ERA: usize = 10;

pub struct TableBuf {
    pub spec: &'static TableSpec,
    cols: Vec<ColumnBuilder>,
    pub rows: usize,
}

impl TableBuf {
    pub fn new(name: &str) -> TableBuf {
        let spec = CdmSpec::v54()
            .table(name)
            .expect("generator table is in the CDM spec");
        TableBuf {
            spec,
            cols: spec
                .fields
                .iter()
                .map(|f| ColumnBuilder::new(f.ty, 1024))
                .collect(),
            rows: 0,
        }
    }

    /// Append one row; `vals[i]` goes to field `i`, missing trailing fields are NULL.
    pub fn push(&mut self, vals: &[Value]) {
        debug_assert!(
            vals.len() <= self.cols.len(),
            "{}: too many values",
            self.spec.name
        );
        for (i, b) in self.cols.iter_mut().enumerate() {
            match vals.get(i) {
                Some(v) => b.append(v),
                None => b.append_null(),
            }
        }
        self.rows += 1;
    }

    pub fn finish(&mut self) -> Result<RecordBatch, CdmError> {
        let cols = self.cols.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(self.spec.schema(), cols).map_err(|e| {
            CdmError::Store(format!(
                "generated {} batch is invalid: {e}",
                self.spec.name
            ))
        })
    }
}

/// All generated rows of one site for one chunk of persons.
pub struct SiteRows {
    pub tables: Vec<TableBuf>,
}

impl SiteRows {
    pub fn new() -> SiteRows {
        SiteRows {
            tables: TABLES.iter().map(|t| TableBuf::new(t)).collect(),
        }
    }
}

impl Default for SiteRows {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positional writers in `person.rs` rely on these field positions.
    #[test]
    fn field_positions_match_the_spec() {
        let spec = CdmSpec::v54();
        let at = |t: &str, i: usize| spec.table(t).unwrap().fields[i].name.clone();
        assert_eq!(at("person", 8), "location_id");
        assert_eq!(at("person", 10), "care_site_id");
        assert_eq!(at("visit_occurrence", 7), "visit_type_concept_id");
        assert_eq!(at("visit_occurrence", 9), "care_site_id");
        assert_eq!(at("condition_occurrence", 11), "visit_occurrence_id");
        assert_eq!(at("condition_occurrence", 13), "condition_source_value");
        assert_eq!(at("drug_exposure", 12), "days_supply");
        assert_eq!(at("drug_exposure", 17), "visit_occurrence_id");
        assert_eq!(at("measurement", 8), "value_as_number");
        assert_eq!(at("measurement", 10), "unit_concept_id");
        assert_eq!(at("measurement", 14), "visit_occurrence_id");
        assert_eq!(at("observation", 8), "value_as_concept_id");
        assert_eq!(at("payer_plan_period", 5), "payer_source_value");
        assert_eq!(at("drug_era", 6), "gap_days");
        assert_eq!(at("death", 4), "cause_concept_id");
    }
}
