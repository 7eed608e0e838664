//! PostgreSQL for tests: the fixtures are `ben_sql::testing`'s; the
//! choice of backend a test runs on is this crate's.

#![allow(dead_code)]

use ben_sql::testing::TestDb;

/// The database a test runs on.
pub enum Backend {
    Sqlite,
    Postgres(TestDb),
}

impl Backend {
    pub async fn postgres() -> Backend {
        Backend::Postgres(TestDb::create().await)
    }

    pub fn url(&self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres(db) => Some(db.url.clone()),
        }
    }
}
