//! A PostgreSQL database of its own for each test that needs one, on the server named by
//! `TANDEM_TEST_POSTGRES_URL`: an admin URL (e.g.
//! `postgres://tandem:tandem@127.0.0.1:5432/tandem_test`) of a role that may create databases.
//! Each database is dropped when its handle is, so tests run in parallel. Without the URL a
//! test that needs PostgreSQL is skipped with a note, unless `TANDEM_TEST_POSTGRES_REQUIRED` is
//! set, when it fails.

use std::sync::atomic::{AtomicU32, Ordering};

pub const POSTGRES_URL: &str = "TANDEM_TEST_POSTGRES_URL";
pub const POSTGRES_REQUIRED: &str = "TANDEM_TEST_POSTGRES_REQUIRED";

/// The admin URL, or None (after saying why) when no server is configured.
pub fn postgres_admin_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os(POSTGRES_REQUIRED).is_some() => panic!(
            "{POSTGRES_REQUIRED} is set but {POSTGRES_URL} is not: set {POSTGRES_URL} to the URL \
             of a PostgreSQL role that may create databases, e.g. \
             {POSTGRES_URL}=postgres://tandem:tandem@127.0.0.1:5432/tandem_test"
        ),
        _ => {
            let note = format!(
                "the PostgreSQL half of the storage tests was skipped: {POSTGRES_URL} is not set \
                 (set it to e.g. postgres://tandem:tandem@127.0.0.1:5432/tandem_test to run it)"
            );
            eprintln!("{test}: {note}");
            // The test harness keeps a passing test's output to itself; say it once where it
            // is seen.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "note: {note}");
            });
            None
        }
    }
}

/// A database of its own on the test server, dropped when this is dropped (also when the test
/// failed).
pub struct PostgresDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

/// The URL with its database (its path) replaced.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{POSTGRES_URL} must be a URL (postgres://...)"));
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect with {POSTGRES_URL}: {e}"));
    tokio::spawn(connection);
    client
}

impl PostgresDatabase {
    pub async fn create(admin_url: &str) -> PostgresDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "tandem_t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin_client(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
        PostgresDatabase {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A runtime of its own on a thread of its own: drop may run inside the test's runtime,
        // where blocking on a future is not allowed.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                admin_client(&admin_url)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_test_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/tandem_test?sslmode=disable", "t_1"),
            "postgres://u:p@h:5432/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t_2"), "postgres://h/t_2");
    }
}
