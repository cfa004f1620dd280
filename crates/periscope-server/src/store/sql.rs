//! One way to run SQL on either database, so the store's queries are written once.
//!
//! The store writes its statements in the SQL both SQLite and PostgreSQL accept, with `?1`,
//! `?2`… placeholders, and reads rows as typed cells. rusqlite and postgres each do the real
//! work; this file only bridges their different parameter and row types (neither crate offers
//! a common interface, and sqlx's `Any` driver would mean rewriting the store as async code).

use super::StoreError;

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter. Integers are 64-bit in both schemas (BIGINT in PostgreSQL).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Int(Some(v as i64))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

/// `args![a, b, …]`: statement parameters from values of the types [`Arg`] converts.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Arg::from($v)),*][..] };
}
pub(crate) use args;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Column(format!("no column {i}")))
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        match self.cell(i)? {
            Cell::Int(v) => Ok(*v),
            Cell::Float(f) => Ok(*f as i64),
            other => Err(StoreError::Column(format!(
                "column {i} is {other:?}, not an integer"
            ))),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn float(&self, i: usize) -> Result<f64> {
        match self.cell(i)? {
            Cell::Float(f) => Ok(*f),
            Cell::Int(v) => Ok(*v as f64),
            other => Err(StoreError::Column(format!(
                "column {i} is {other:?}, not a number"
            ))),
        }
    }

    pub fn text(&self, i: usize) -> Result<String> {
        match self.cell(i)? {
            Cell::Text(s) => Ok(s.clone()),
            other => Err(StoreError::Column(format!(
                "column {i} is {other:?}, not text"
            ))),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
}

/// Refuses text with a NUL character: PostgreSQL's text cannot hold one, and both stores must
/// take the same inputs. (Event bodies are JSON, where a NUL is written `\u0000`.)
fn check_args(args: &[Arg<'_>]) -> Result<()> {
    if args
        .iter()
        .any(|a| matches!(a, Arg::Text(Some(s)) if s.contains('\0')))
    {
        return Err(StoreError::Nul);
    }
    Ok(())
}

/// A database connection as the store uses it.
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;
    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>>;
    /// Runs statements without parameters (transactions, migrations).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Inserts many rows into `table` at once; every row has one value per column, of the
    /// same kinds as the first row.
    fn insert_rows(&mut self, table: &str, columns: &[&str], rows: &[Vec<Arg<'_>>]) -> Result<()>;
    /// The connection is gone (the server closed it): the pool must not hand it out again.
    fn is_broken(&self) -> bool {
        false
    }
}

// ---- SQLite --------------------------------------------------------------------------------

pub struct SqliteConn(pub rusqlite::Connection);

fn sqlite_value(a: &Arg<'_>) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match *a {
        Arg::Int(Some(v)) => Value::Integer(v),
        Arg::Text(Some(s)) => Value::Text(s.to_string()),
        Arg::Int(None) | Arg::Text(None) => Value::Null,
    }
}

fn sqlite_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(f) => Cell::Float(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => Cell::Text(String::from_utf8_lossy(t).into()),
    }
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        check_args(args)?;
        let mut st = self.0.prepare_cached(sql)?;
        let values: Vec<_> = args.iter().map(sqlite_value).collect();
        Ok(st.execute(rusqlite::params_from_iter(values))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        check_args(args)?;
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let values: Vec<_> = args.iter().map(sqlite_value).collect();
        let mut rows = st.query(rusqlite::params_from_iter(values))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let cells = (0..n)
                .map(|i| r.get_ref(i).map(sqlite_cell))
                .collect::<rusqlite::Result<_>>()?;
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn insert_rows(&mut self, table: &str, columns: &[&str], rows: &[Vec<Arg<'_>>]) -> Result<()> {
        // In-process inserts with a prepared statement are as fast as SQLite gets.
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        );
        for row in rows {
            self.execute(&sql, row)?;
        }
        Ok(())
    }
}

// ---- PostgreSQL ----------------------------------------------------------------------------

/// A PostgreSQL connection with its prepared statements (one parse per statement text per
/// connection, not per call).
pub struct PgConn {
    client: postgres::Client,
    prepared: std::collections::HashMap<String, postgres::Statement>,
}

/// `?N` placeholders as PostgreSQL's `$N`. The store's SQL has no `?` in string literals.
pub fn pg_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

/// A parameter with PostgreSQL's wire types: BIGINT or TEXT.
enum PgArg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl PgArg<'_> {
    fn as_sql(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            PgArg::Int(v) => v,
            PgArg::Text(v) => v,
        }
    }
}

fn pg_cell(row: &postgres::Row, i: usize) -> Result<Cell> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Cell::Null, Cell::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Cell::Null, Cell::Float),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map_or(Cell::Null, |v| Cell::Float(v.into())),
        Type::VOID => Cell::Null,
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text),
    })
}

impl PgConn {
    pub fn connect(url: &str) -> Result<PgConn> {
        let client = postgres::Client::connect(url, postgres::NoTls)?;
        Ok(PgConn {
            client,
            prepared: Default::default(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&pg_placeholders(sql))?;
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn args<'a>(args: &[Arg<'a>]) -> Vec<PgArg<'a>> {
        args.iter()
            .map(|a| match *a {
                Arg::Int(v) => PgArg::Int(v),
                Arg::Text(v) => PgArg::Text(v),
            })
            .collect()
    }
}

impl Conn for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        check_args(args)?;
        let st = self.statement(sql)?;
        let owned = Self::args(args);
        let params: Vec<_> = owned.iter().map(PgArg::as_sql).collect();
        Ok(self.client.execute(&st, &params)?)
    }

    fn query(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        check_args(args)?;
        let st = self.statement(sql)?;
        let owned = Self::args(args);
        let params: Vec<_> = owned.iter().map(PgArg::as_sql).collect();
        self.client
            .query(&st, &params)?
            .iter()
            .map(|r| (0..r.len()).map(|i| pg_cell(r, i)).collect())
            .map(|cells: Result<Vec<Cell>>| cells.map(Row))
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.client.batch_execute(sql)?)
    }

    fn insert_rows(&mut self, table: &str, columns: &[&str], rows: &[Vec<Arg<'_>>]) -> Result<()> {
        // One statement for the whole batch: each column travels as an array and UNNEST
        // turns the arrays back into rows (one round trip instead of one per row).
        let Some(first) = rows.first() else {
            return Ok(());
        };
        for row in rows {
            check_args(row)?;
        }
        let mut ints: Vec<Vec<Option<i64>>> = Vec::new();
        let mut texts: Vec<Vec<Option<&str>>> = Vec::new();
        let mut casts = Vec::new();
        for (c, kind) in first.iter().enumerate() {
            match kind {
                Arg::Int(_) => {
                    casts.push(format!("${}::bigint[]", c + 1));
                    ints.push(rows.iter().map(|r| int_of(r.get(c))).collect());
                    texts.push(Vec::new());
                }
                Arg::Text(_) => {
                    casts.push(format!("${}::text[]", c + 1));
                    texts.push(rows.iter().map(|r| text_of(r.get(c))).collect());
                    ints.push(Vec::new());
                }
            }
        }
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT * FROM UNNEST({})",
            columns.join(", "),
            casts.join(", ")
        );
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = first
            .iter()
            .enumerate()
            .map(|(c, kind)| match kind {
                Arg::Int(_) => &ints[c] as &(dyn postgres::types::ToSql + Sync),
                Arg::Text(_) => &texts[c] as &(dyn postgres::types::ToSql + Sync),
            })
            .collect();
        let st = self.statement(&sql)?;
        self.client.execute(&st, &params)?;
        Ok(())
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

fn int_of(a: Option<&Arg<'_>>) -> Option<i64> {
    match a {
        Some(Arg::Int(v)) => *v,
        _ => None,
    }
}

fn text_of<'a>(a: Option<&Arg<'a>>) -> Option<&'a str> {
    match a {
        Some(Arg::Text(v)) => *v,
        _ => None,
    }
}

/// Runs `f` in a transaction: committed when it returns Ok, rolled back otherwise.
pub fn transaction<T>(
    conn: &mut dyn Conn,
    f: impl FnOnce(&mut dyn Conn) -> Result<T>,
) -> Result<T> {
    conn.batch("BEGIN")?;
    match f(conn) {
        Ok(v) => {
            conn.batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            // The original error is what matters; a failed rollback leaves the connection
            // broken, which the pool notices.
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}
