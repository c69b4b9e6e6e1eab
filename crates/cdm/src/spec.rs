//! The OMOP CDM v5.4 table and field specification.
//!
//! The source of truth is OHDSI's own field-level CSV (`spec/OMOP_CDMv5.4_Field_Level.csv`, embedded at
//! build time), so the Arrow schemas here cannot drift from the official model by hand-editing.
//!
//! Type mapping: `integer` → `Int64` (many sites use BIGINT ids; one width everywhere keeps joins
//! simple), `float` → `Float64`, `date` → `Date32`, `datetime` → `Timestamp(µs)`, `varchar(n)` → `Utf8`
//! with its declared length kept for validation. A field is nullable exactly when the spec says it is
//! not required.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

const FIELD_LEVEL_CSV: &str = include_str!("../spec/OMOP_CDMv5.4_Field_Level.csv");

/// The CDM version this store layout follows.
pub const CDM_VERSION: &str = "5.4";

/// The CDM type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdmType {
    Integer,
    Float,
    Date,
    Datetime,
    /// `varchar(n)`; `None` for `varchar(MAX)`.
    Varchar(Option<usize>),
}

impl CdmType {
    fn parse(s: &str) -> Option<CdmType> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "integer" | "bigint" => Some(CdmType::Integer),
            "float" => Some(CdmType::Float),
            "date" => Some(CdmType::Date),
            "datetime" => Some(CdmType::Datetime),
            _ => {
                let inner = lower.strip_prefix("varchar(")?.strip_suffix(')')?;
                if inner == "max" {
                    Some(CdmType::Varchar(None))
                } else {
                    inner.parse().ok().map(|n| CdmType::Varchar(Some(n)))
                }
            }
        }
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            CdmType::Integer => DataType::Int64,
            CdmType::Float => DataType::Float64,
            CdmType::Date => DataType::Date32,
            CdmType::Datetime => DataType::Timestamp(TimeUnit::Microsecond, None),
            CdmType::Varchar(_) => DataType::Utf8,
        }
    }
}

/// One field of a CDM table.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub required: bool,
    pub ty: CdmType,
    pub primary_key: bool,
    /// Upper-case table name this field references, if any (e.g. `PERSON`, `CONCEPT`).
    pub fk_table: Option<String>,
}

/// One CDM table: its fields in the official order.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub fields: Vec<FieldSpec>,
    schema: SchemaRef,
}

impl TableSpec {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The single-column primary key, if the table has one.
    pub fn primary_key(&self) -> Option<usize> {
        let pks: Vec<usize> = (0..self.fields.len())
            .filter(|&i| self.fields[i].primary_key)
            .collect();
        (pks.len() == 1).then(|| pks[0])
    }

    /// The `person_id` column when it references PERSON (clinical tables).
    pub fn person_fk(&self) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.name == "person_id" && f.fk_table.as_deref() == Some("PERSON"))
    }
}

/// The whole CDM v5.4 model.
#[derive(Debug)]
pub struct CdmSpec {
    tables: BTreeMap<String, TableSpec>,
}

impl CdmSpec {
    /// The embedded official specification.
    pub fn v54() -> &'static CdmSpec {
        static SPEC: OnceLock<CdmSpec> = OnceLock::new();
        SPEC.get_or_init(|| CdmSpec::parse(FIELD_LEVEL_CSV).expect("embedded CDM spec is valid"))
    }

    fn parse(text: &str) -> Result<CdmSpec, String> {
        let text = text.trim_start_matches('\u{feff}');
        let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let headers = rdr.headers().map_err(|e| e.to_string())?.clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| format!("spec lacks column {name}"))
        };
        let (c_table, c_field, c_req, c_type, c_pk, c_fk) = (
            col("cdmTableName")?,
            col("cdmFieldName")?,
            col("isRequired")?,
            col("cdmDatatype")?,
            col("isPrimaryKey")?,
            col("fkTableName")?,
        );
        let mut fields: BTreeMap<String, Vec<FieldSpec>> = BTreeMap::new();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| e.to_string())?;
            let ty = CdmType::parse(&rec[c_type])
                .ok_or_else(|| format!("spec row {}: unknown type {}", i + 2, &rec[c_type]))?;
            let fk = rec[c_fk].trim();
            fields
                .entry(rec[c_table].to_ascii_lowercase())
                .or_default()
                .push(FieldSpec {
                    name: rec[c_field].to_ascii_lowercase(),
                    required: rec[c_req].eq_ignore_ascii_case("yes"),
                    ty,
                    primary_key: rec[c_pk].eq_ignore_ascii_case("yes"),
                    fk_table: (!fk.is_empty() && fk != "NA").then(|| fk.to_ascii_uppercase()),
                });
        }
        let tables = fields
            .into_iter()
            .map(|(name, fields)| {
                let schema = Arc::new(Schema::new(
                    fields
                        .iter()
                        .map(|f| Field::new(&f.name, f.ty.arrow_type(), !f.required))
                        .collect::<Vec<_>>(),
                ));
                (
                    name.clone(),
                    TableSpec {
                        name,
                        fields,
                        schema,
                    },
                )
            })
            .collect();
        Ok(CdmSpec { tables })
    }

    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.get(&name.to_ascii_lowercase())
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values()
    }

    /// Tables in load order: `person` first (everything references it), then the rest by name.
    pub fn load_order(&self) -> Vec<&TableSpec> {
        let mut out: Vec<&TableSpec> = self.tables.get("person").into_iter().collect();
        out.extend(self.tables.values().filter(|t| t.name != "person"));
        out
    }
}

/// Column renames between CDM 5.3 and 5.4, applied on import so that 5.3 exports load into 5.4 stores.
pub fn v53_rename(table: &str, column: &str) -> Option<&'static str> {
    match (table, column) {
        ("visit_occurrence" | "visit_detail", "admitting_source_concept_id") => {
            Some("admitted_from_concept_id")
        }
        ("visit_occurrence" | "visit_detail", "admitting_source_value") => {
            Some("admitted_from_source_value")
        }
        ("visit_occurrence" | "visit_detail", "discharge_to_concept_id") => {
            Some("discharged_to_concept_id")
        }
        ("visit_occurrence" | "visit_detail", "discharge_to_source_value") => {
            Some("discharged_to_source_value")
        }
        ("visit_detail", "visit_detail_parent_id") => Some("parent_visit_detail_id"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_the_core_tables_with_official_types() {
        let spec = CdmSpec::v54();
        assert_eq!(spec.tables().count(), 39);
        let person = spec.table("PERSON").unwrap();
        assert_eq!(person.fields[0].name, "person_id");
        assert_eq!(person.primary_key(), Some(0));
        let schema = person.schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert!(!schema.field(0).is_nullable());
        assert!(schema
            .field_with_name("birth_datetime")
            .unwrap()
            .is_nullable());
        let death = spec.table("death").unwrap();
        assert_eq!(death.primary_key(), None);
        assert_eq!(death.person_fk(), Some(0));
        let m = spec.table("measurement").unwrap();
        let v = &m.fields[m.field_index("value_as_number").unwrap()];
        assert_eq!(v.ty, CdmType::Float);
        assert_eq!(spec.load_order()[0].name, "person");
    }
}
