//! The writes of one batch of events, held until the batch is applied and then sent as few
//! statements as the rows allow: rows of one shape become one multi-row `INSERT`, upsert,
//! `UPDATE … FROM (VALUES …)` or `DELETE … WHERE (key) IN (VALUES …)`. Over PostgreSQL that
//! turns a round trip per event into a handful per batch; on SQLite it saves the per-statement
//! cost of the driver.
//!
//! Order is kept wherever it matters. Each write names the *entity* it touches (a string the
//! caller chooses: every write that could touch the same rows of a table must name the same
//! entity). A write goes into the round after the last write of its entity, so within a round
//! an entity appears at most once and grouping a round's writes by shape cannot reorder two
//! writes that could see each other. Rounds run in order; tables are independent.

use std::collections::HashMap;

use sqlx::{AnyConnection, AssertSqlSafe};

/// One bound value: the two types projections store (text, and 64-bit integers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Insert,
    /// Insert, or on a key conflict set the other columns.
    Upsert,
    /// Insert, or on a key conflict add the `rest` columns to the stored ones (the `keep`
    /// columns keep their stored values).
    Add,
    Update,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    kind: Kind,
    table: &'static str,
    /// The columns that find the row (for `Insert`, simply the first columns).
    key: &'static [&'static str],
    /// Columns written on insert only (`Add`).
    keep: &'static [&'static str],
    /// The other columns written.
    rest: &'static [&'static str],
}

impl Shape {
    fn columns(&self) -> usize {
        self.key.len() + self.keep.len() + self.rest.len()
    }
}

/// Rows of one shape in one round.
type Group = (Shape, Vec<Vec<Value>>);

#[derive(Default)]
pub struct Writes {
    /// (table, entity) → the round of its last write.
    last_round: HashMap<(&'static str, String), usize>,
    rounds: Vec<Vec<Group>>,
    /// Statements sent so far (for tests and benchmarks).
    pub statements: usize,
}

/// Bound parameters per statement: under SQLite's limit (32,766) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

impl Writes {
    /// A new row: `values` in the order of `columns`.
    pub fn insert(
        &mut self,
        table: &'static str,
        columns: &'static [&'static str],
        entity: &str,
        values: Vec<Value>,
    ) {
        self.push(
            Shape {
                kind: Kind::Insert,
                table,
                key: columns,
                keep: &[],
                rest: &[],
            },
            entity,
            values,
        );
    }

    /// A row by `key`, created or replaced: `values` are the key's, then `rest`'s.
    pub fn upsert(
        &mut self,
        table: &'static str,
        key: &'static [&'static str],
        rest: &'static [&'static str],
        entity: &str,
        values: Vec<Value>,
    ) {
        self.push(
            Shape {
                kind: Kind::Upsert,
                table,
                key,
                keep: &[],
                rest,
            },
            entity,
            values,
        );
    }

    /// A row by `key`, created, or else its `sum` columns added to (counters; the `keep`
    /// columns are written only when the row is created): `values` are the key's, `keep`'s,
    /// then `sum`'s.
    pub fn add(
        &mut self,
        table: &'static str,
        key: &'static [&'static str],
        keep: &'static [&'static str],
        sum: &'static [&'static str],
        entity: &str,
        values: Vec<Value>,
    ) {
        self.push(
            Shape {
                kind: Kind::Add,
                table,
                key,
                keep,
                rest: sum,
            },
            entity,
            values,
        );
    }

    /// `UPDATE table SET set… WHERE key…`: `values` are the key's, then `set`'s.
    pub fn update(
        &mut self,
        table: &'static str,
        key: &'static [&'static str],
        set: &'static [&'static str],
        entity: &str,
        values: Vec<Value>,
    ) {
        self.push(
            Shape {
                kind: Kind::Update,
                table,
                key,
                keep: &[],
                rest: set,
            },
            entity,
            values,
        );
    }

    /// `DELETE FROM table WHERE key…`.
    pub fn delete(
        &mut self,
        table: &'static str,
        key: &'static [&'static str],
        entity: &str,
        values: Vec<Value>,
    ) {
        self.push(
            Shape {
                kind: Kind::Delete,
                table,
                key,
                keep: &[],
                rest: &[],
            },
            entity,
            values,
        );
    }

    fn push(&mut self, shape: Shape, entity: &str, values: Vec<Value>) {
        let table = shape.table;
        debug_assert_eq!(values.len(), shape.columns(), "{table}: values per column");
        // The round after the entity's last write, or the first.
        let round = *self
            .last_round
            .entry((table, entity.to_owned()))
            .and_modify(|r| *r += 1)
            .or_insert(0);
        if self.rounds.len() <= round {
            self.rounds.resize_with(round + 1, Vec::new);
        }
        let groups = &mut self.rounds[round];
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, rows)) => rows.push(values),
            None => groups.push((shape, vec![values])),
        }
    }

    /// Sends every held write, round by round, and forgets them.
    pub async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        self.last_round.clear();
        let placeholders = Placeholders::of(conn);
        for groups in std::mem::take(&mut self.rounds) {
            for (shape, rows) in groups {
                let per_statement = (MAX_PARAMS / shape.columns()).max(1);
                for chunk in rows.chunks(per_statement) {
                    let sql = statement(&shape, chunk.len(), placeholders);
                    let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                    for row in chunk {
                        for v in row {
                            q = match v {
                                Value::Text(t) => q.bind(t.clone()),
                                Value::Int(i) => q.bind(*i),
                            };
                        }
                    }
                    q.execute(&mut *conn).await?;
                    self.statements += 1;
                }
            }
        }
        Ok(())
    }
}

/// How a statement names its parameters: `$1, $2, …` (PostgreSQL), or `?` in order
/// (SQLite: sqlx finds each *named* parameter's index by a search through all of them, so a
/// statement of n named parameters costs n² to bind; anonymous ones bind in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    Numbered,
    Anonymous,
}

impl Placeholders {
    /// What `conn`'s database wants.
    pub fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        }
    }
}

/// `($1, $2), ($3, $4), …` (or `(?, ?), (?, ?), …`): `rows` tuples of `columns` placeholders.
pub(crate) fn tuples(rows: usize, columns: usize, p: Placeholders) -> String {
    let mut s = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..columns {
            if c > 0 {
                s.push_str(", ");
            }
            match p {
                Placeholders::Numbered => {
                    s.push('$');
                    s.push_str(&(r * columns + c + 1).to_string());
                }
                Placeholders::Anonymous => s.push('?'),
            }
        }
        s.push(')');
    }
    s
}

fn statement(shape: &Shape, rows: usize, p: Placeholders) -> String {
    let t = shape.table;
    let key = shape.key.join(", ");
    let all = shape
        .key
        .iter()
        .chain(shape.keep)
        .chain(shape.rest)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let values = tuples(rows, shape.columns(), p);
    match shape.kind {
        Kind::Insert => format!("INSERT INTO {t} ({all}) VALUES {values}"),
        Kind::Upsert if shape.rest.is_empty() => {
            format!("INSERT INTO {t} ({all}) VALUES {values} ON CONFLICT ({key}) DO NOTHING")
        }
        Kind::Upsert => {
            let set = shape
                .rest
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO {t} ({all}) VALUES {values} ON CONFLICT ({key}) DO UPDATE SET {set}"
            )
        }
        Kind::Add => {
            let set = shape
                .rest
                .iter()
                .map(|c| format!("{c} = {t}.{c} + excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO {t} ({all}) VALUES {values} ON CONFLICT ({key}) DO UPDATE SET {set}"
            )
        }
        Kind::Update => {
            // VALUES names its columns column1, column2, … in SQLite and PostgreSQL alike.
            let n = shape.key.len();
            let set = shape
                .rest
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = v.column{}", n + i + 1))
                .collect::<Vec<_>>()
                .join(", ");
            let on = shape
                .key
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{t}.{c} = v.column{}", i + 1))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!("UPDATE {t} SET {set} FROM (VALUES {values}) AS v WHERE {on}")
        }
        Kind::Delete => format!("DELETE FROM {t} WHERE ({key}) IN (VALUES {values})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: Kind, key: &'static [&'static str], rest: &'static [&'static str]) -> Shape {
        Shape {
            kind,
            table: "t",
            key,
            keep: &[],
            rest,
        }
    }

    #[test]
    fn statements_have_one_tuple_per_row() {
        assert_eq!(
            statement(
                &shape(Kind::Insert, &["a", "b"], &[]),
                2,
                Placeholders::Numbered
            ),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            statement(
                &shape(Kind::Update, &["k"], &["a", "b"]),
                1,
                Placeholders::Numbered
            ),
            "UPDATE t SET a = v.column2, b = v.column3 FROM (VALUES ($1, $2, $3)) AS v WHERE t.k = v.column1"
        );
        assert_eq!(
            statement(
                &shape(Kind::Delete, &["k", "j"], &[]),
                2,
                Placeholders::Anonymous
            ),
            "DELETE FROM t WHERE (k, j) IN (VALUES (?, ?), (?, ?))"
        );
        let add = Shape {
            keep: &["c"],
            ..shape(Kind::Add, &["k"], &["n"])
        };
        assert_eq!(
            statement(&add, 1, Placeholders::Numbered),
            "INSERT INTO t (k, c, n) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n"
        );
    }

    #[test]
    fn an_entity_written_twice_goes_to_a_later_round() {
        let mut w = Writes::default();
        w.insert("t", &["k"], "a", vec!["a".into()]);
        w.insert("t", &["k"], "b", vec!["b".into()]);
        w.delete("t", &["k"], "a", vec!["a".into()]);
        w.insert("t", &["k"], "a", vec!["a".into()]);
        // Another table's writes of the same entity do not wait.
        w.insert("u", &["k"], "a", vec!["a".into()]);
        let shapes: Vec<Vec<(Kind, &str, usize)>> = w
            .rounds
            .iter()
            .map(|g| g.iter().map(|(s, r)| (s.kind, s.table, r.len())).collect())
            .collect();
        assert_eq!(
            shapes,
            vec![
                vec![(Kind::Insert, "t", 2), (Kind::Insert, "u", 1)],
                vec![(Kind::Delete, "t", 1)],
                vec![(Kind::Insert, "t", 1)],
            ]
        );
    }
}
