//! A hospital's OMOP CDM in PostgreSQL as a site: read-only queries, results as Arrow batches.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use tokio_postgres::types::Type;

use crate::EngineError;

/// A `postgres://…?schema=cdm` site: connection settings and the CDM schema.
pub struct PgSite {
    /// The URL without the `schema` parameter.
    url: String,
    pub schema: String,
}

impl PgSite {
    pub fn parse(url: &str) -> Result<PgSite, EngineError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = None;
        let mut rest = Vec::new();
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("schema", v)) => schema = Some(v.to_string()),
                _ => rest.push(kv),
            }
        }
        let schema = schema.unwrap_or_else(|| "public".to_string());
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(EngineError::Query(format!(
                "schema {schema:?} in the site URL must be lower-case letters, digits and _"
            )));
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        Ok(PgSite { url, schema })
    }

    /// The connection URL without the `schema` parameter.
    pub fn base_url(&self) -> &str {
        &self.url
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, EngineError> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                EngineError::Query(format!("cannot connect to the site's PostgreSQL: {e}"))
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Run one statement in a read-only transaction with the CDM schema first on the search path.
    ///
    /// Nested-loop joins are off for the statement: node queries scan whole CDM tables and join on
    /// `person_id`, and PostgreSQL's row estimate after a `ROW_NUMBER() … = 1` filter is 1, which
    /// made it re-run an aggregate subquery once per cohort entry (a Circe cohort on Eunomia took
    /// minutes instead of a second). The setting is a cost penalty, so a join with no equality
    /// condition still gets a nested loop.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let client = self.connect().await?;
        let q = |e: tokio_postgres::Error| {
            EngineError::Query(match e.as_db_error() {
                Some(d) => format!("{}: {}", d.code().code(), d.message()),
                None => e.to_string(),
            })
        };
        client
            .batch_execute(&format!(
                "BEGIN TRANSACTION READ ONLY; SET LOCAL search_path TO {}; SET LOCAL enable_nestloop = off",
                self.schema
            ))
            .await
            .map_err(q)?;
        let stmt = client.prepare(sql).await.map_err(q)?;
        let rows = client.query(&stmt, &[]).await.map_err(q)?;
        client.batch_execute("COMMIT").await.map_err(q)?;
        let cols = stmt.columns();
        let mut fields = Vec::with_capacity(cols.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
        for (i, c) in cols.iter().enumerate() {
            let t = c.type_();
            let (dt, a): (DataType, ArrayRef) = if *t == Type::INT8
                || *t == Type::INT4
                || *t == Type::INT2
            {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in &rows {
                    let v: Option<i64> = if *t == Type::INT8 {
                        r.try_get(i).map_err(q)?
                    } else if *t == Type::INT4 {
                        r.try_get::<_, Option<i32>>(i).map_err(q)?.map(i64::from)
                    } else {
                        r.try_get::<_, Option<i16>>(i).map_err(q)?.map(i64::from)
                    };
                    b.append_option(v);
                }
                (DataType::Int64, Arc::new(b.finish()))
            } else if *t == Type::FLOAT8 || *t == Type::FLOAT4 {
                let mut b = Float64Builder::with_capacity(rows.len());
                for r in &rows {
                    let v: Option<f64> = if *t == Type::FLOAT8 {
                        r.try_get(i).map_err(q)?
                    } else {
                        r.try_get::<_, Option<f32>>(i).map_err(q)?.map(f64::from)
                    };
                    b.append_option(v);
                }
                (DataType::Float64, Arc::new(b.finish()))
            } else if *t == Type::TEXT
                || *t == Type::VARCHAR
                || *t == Type::BPCHAR
                || *t == Type::NAME
            {
                let mut b = StringBuilder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<String>>(i).map_err(q)?);
                }
                (DataType::Utf8, Arc::new(b.finish()))
            } else if *t == Type::DATE {
                let mut b = Date32Builder::with_capacity(rows.len());
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
                for r in &rows {
                    let v: Option<chrono::NaiveDate> = r.try_get(i).map_err(q)?;
                    b.append_option(v.map(|d| (d - epoch).num_days() as i32));
                }
                (DataType::Date32, Arc::new(b.finish()))
            } else if *t == Type::BOOL {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<bool>>(i).map_err(q)?);
                }
                (DataType::Boolean, Arc::new(b.finish()))
            } else {
                return Err(EngineError::Query(format!(
                    "column {} has PostgreSQL type {t}, which medfed does not read; cast it to BIGINT, DOUBLE PRECISION or VARCHAR",
                    c.name()
                )));
            };
            fields.push(Field::new(c.name(), dt, true));
            arrays.push(a);
        }
        let schema = Arc::new(Schema::new(fields));
        if arrays.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![
            RecordBatch::try_new(schema, arrays).map_err(|e| EngineError::Query(e.to_string()))?
        ])
    }
}
