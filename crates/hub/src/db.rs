//! The hub's two database backends behind one small trait, so that every query in [`crate::store`] is
//! written once and runs on both SQLite (the embedded default) and PostgreSQL (the national database).
//!
//! Queries use `$1, $2, …` placeholders, each first appearing in order; SQLite reads them as numbered
//! parameters and PostgreSQL natively. Values are 64-bit integers, doubles, text or NULL.

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    I(i64),
    T(String),
    /// A double (`DOUBLE PRECISION`), typed even when NULL so that PostgreSQL accepts it.
    F(Option<f64>),
    Null,
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Val::I(i) => Some(*i),
            _ => None,
        }
    }
    pub fn text(&self) -> Option<&str> {
        match self {
            Val::T(s) => Some(s),
            _ => None,
        }
    }
    pub fn float(&self) -> Option<f64> {
        match self {
            Val::F(f) => *f,
            Val::I(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn into_text(self) -> String {
        match self {
            Val::T(s) => s,
            Val::I(i) => i.to_string(),
            Val::F(f) => f.map(|x| x.to_string()).unwrap_or_default(),
            Val::Null => String::new(),
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::T(s.to_string())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::T(s)
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::I(i)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct DbError(pub String);

pub trait Db: Send {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, DbError>;
    /// Run several statements without parameters (schema creation).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// Begin a write transaction (SQLite: `BEGIN IMMEDIATE`, so the write lock is taken up front).
    fn begin(&mut self) -> Result<(), DbError>;
    fn commit(&mut self) -> Result<(), DbError>;
    fn rollback(&mut self) -> Result<(), DbError>;
    /// Primary-key type with automatic numbering, for the audit trail.
    fn serial(&self) -> &'static str;
    fn backend(&self) -> &'static str;
}

pub struct Sqlite(rusqlite::Connection);

impl Sqlite {
    /// Open (or create) a database file; `:memory:` for an in-process hub.
    pub fn open(path: &str) -> Result<Sqlite, DbError> {
        let c = rusqlite::Connection::open(path).map_err(|e| DbError(format!("{path}: {e}")))?;
        // WAL + synchronous=FULL: a committed result survives a kill or a power loss.
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
        )
        .map_err(|e| DbError(e.to_string()))?;
        Ok(Sqlite(c))
    }
}

fn sqlite_params(params: &[Val]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|v| match v {
            Val::I(i) => rusqlite::types::Value::Integer(*i),
            Val::T(s) => rusqlite::types::Value::Text(s.clone()),
            Val::F(Some(f)) => rusqlite::types::Value::Real(*f),
            Val::F(None) | Val::Null => rusqlite::types::Value::Null,
        })
        .collect()
}

impl Db for Sqlite {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        let p = sqlite_params(params);
        self.0
            .execute(sql, rusqlite::params_from_iter(p.iter()))
            .map(|n| n as u64)
            .map_err(|e| DbError(e.to_string()))
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, DbError> {
        let p = sqlite_params(params);
        let mut st = self
            .0
            .prepare_cached(sql)
            .map_err(|e| DbError(e.to_string()))?;
        let n = st.column_count();
        let rows = st
            .query_map(rusqlite::params_from_iter(p.iter()), |row| {
                (0..n)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Integer(x) => Val::I(x),
                            rusqlite::types::ValueRef::Text(t) => {
                                Val::T(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Null => Val::Null,
                            rusqlite::types::ValueRef::Real(r) => Val::F(Some(r)),
                            rusqlite::types::ValueRef::Blob(b) => Val::T(hex::encode(b)),
                        })
                    })
                    .collect::<Result<Vec<Val>, rusqlite::Error>>()
            })
            .map_err(|e| DbError(e.to_string()))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| DbError(e.to_string()))
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.0
            .execute_batch(sql)
            .map_err(|e| DbError(e.to_string()))
    }
    fn begin(&mut self) -> Result<(), DbError> {
        self.batch("BEGIN IMMEDIATE")
    }
    fn commit(&mut self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }
    fn rollback(&mut self) -> Result<(), DbError> {
        self.batch("ROLLBACK")
    }
    fn serial(&self) -> &'static str {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    }
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

pub struct Postgres(postgres::Client);

impl Postgres {
    /// Connect and use `schema` (created if missing), so one PostgreSQL can hold several hubs (tests).
    pub fn connect(url: &str, schema: &str) -> Result<Postgres, DbError> {
        if !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || schema.is_empty()
        {
            return Err(DbError(format!(
                "schema name {schema:?} must be lower-case letters, digits and _"
            )));
        }
        let mut c = postgres::Client::connect(url, postgres::NoTls)
            .map_err(|e| DbError(format!("cannot connect to {}: {e}", redact(url))))?;
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
        ))
        .map_err(|e| DbError(e.to_string()))?;
        Ok(Postgres(c))
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Db for Postgres {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        let p = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            p.iter().map(|b| b.as_ref()).collect();
        self.0
            .execute(sql, &refs)
            .map_err(|e| DbError(pg_error(&e)))
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, DbError> {
        use postgres::types::Type;
        let p = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            p.iter().map(|b| b.as_ref()).collect();
        let rows = self
            .0
            .query(sql, &refs)
            .map_err(|e| DbError(pg_error(&e)))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut r = Vec::with_capacity(row.len());
            for (i, col) in row.columns().iter().enumerate() {
                let t = col.type_();
                let v = if *t == Type::INT8 {
                    row.get::<_, Option<i64>>(i).map(Val::I)
                } else if *t == Type::INT4 {
                    row.get::<_, Option<i32>>(i).map(|x| Val::I(x.into()))
                } else if *t == Type::FLOAT8 {
                    Some(Val::F(row.get::<_, Option<f64>>(i)))
                } else {
                    row.get::<_, Option<String>>(i).map(Val::T)
                };
                r.push(v.unwrap_or(Val::Null));
            }
            out.push(r);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.0.batch_execute(sql).map_err(|e| DbError(pg_error(&e)))
    }
    fn begin(&mut self) -> Result<(), DbError> {
        self.batch("BEGIN ISOLATION LEVEL SERIALIZABLE")
    }
    fn commit(&mut self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }
    fn rollback(&mut self) -> Result<(), DbError> {
        self.batch("ROLLBACK")
    }
    fn serial(&self) -> &'static str {
        "BIGSERIAL PRIMARY KEY"
    }
    fn backend(&self) -> &'static str {
        "postgres"
    }
}

fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

fn pg_params(params: &[Val]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Val::I(i) => Box::new(*i),
                Val::T(s) => Box::new(s.clone()),
                Val::F(f) => Box::new(*f),
                Val::Null => Box::new(Option::<String>::None),
            }
        })
        .collect()
}
