//! The history's schema: one list of versioned migrations for both engines. Each is written
//! once with three type words left open — `{INT}`, `{REAL}`, `{BOOL}` — which [`render`]
//! fills per engine: SQLite's `INTEGER`/`REAL`/`INTEGER` (so its text is what melt always
//! wrote), PostgreSQL's `BIGINT`/`DOUBLE PRECISION`/`BOOLEAN` (its `REAL` is 32-bit).
//!
//! The version is SQLite's `PRAGMA user_version`, and PostgreSQL's one-row `melt_schema` table.

use super::store::Engine;

const MIGRATIONS: &[&str] = &[
    // 1: runs, their cases with every sample's time, and each case's metrics.
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        recorded_at TEXT NOT NULL,
        git_commit TEXT,
        git_dirty {BOOL},
        device TEXT NOT NULL,
        host_json TEXT NOT NULL,
        schema_version {INT} NOT NULL
    );
    CREATE TABLE cases (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        case_id TEXT NOT NULL,
        backend TEXT NOT NULL,
        backend_version TEXT NOT NULL,
        model TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        params_json TEXT NOT NULL,
        workload TEXT NOT NULL,
        tokens {INT} NOT NULL,
        samples_ns_json TEXT NOT NULL,
        PRIMARY KEY (run_id, case_id)
    );
    CREATE TABLE metrics (
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        unit TEXT NOT NULL,
        estimate {REAL} NOT NULL,
        lower {REAL},
        upper {REAL},
        n {INT} NOT NULL,
        PRIMARY KEY (run_id, case_id, metric)
    );
    CREATE INDEX cases_by_case ON cases(case_id);
    CREATE INDEX runs_by_commit ON runs(git_commit);",
    // 2: a run is its id *and* its device. Run ids are a UTC second and a tag, so two machines
    // starting the same bench in the same second (CI runners on one push) name their runs
    // alike; once histories are merged, the device tells them apart.
    "CREATE TABLE runs_v2 (
        run_id TEXT NOT NULL,
        device TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        git_commit TEXT,
        git_dirty {BOOL},
        host_json TEXT NOT NULL,
        schema_version {INT} NOT NULL,
        PRIMARY KEY (run_id, device)
    );
    INSERT INTO runs_v2 (run_id, device, recorded_at, git_commit, git_dirty, host_json,
                         schema_version)
        SELECT run_id, device, recorded_at, git_commit, git_dirty, host_json, schema_version
        FROM runs;
    CREATE TABLE cases_v2 (
        run_id TEXT NOT NULL,
        device TEXT NOT NULL,
        case_id TEXT NOT NULL,
        backend TEXT NOT NULL,
        backend_version TEXT NOT NULL,
        model TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        params_json TEXT NOT NULL,
        workload TEXT NOT NULL,
        tokens {INT} NOT NULL,
        samples_ns_json TEXT NOT NULL,
        PRIMARY KEY (run_id, device, case_id),
        FOREIGN KEY (run_id, device) REFERENCES runs_v2(run_id, device)
    );
    INSERT INTO cases_v2
        SELECT c.run_id, r.device, c.case_id, c.backend, c.backend_version, c.model,
               c.model_sha256, c.params_json, c.workload, c.tokens, c.samples_ns_json
        FROM cases c JOIN runs r ON r.run_id = c.run_id;
    CREATE TABLE metrics_v2 (
        run_id TEXT NOT NULL,
        device TEXT NOT NULL,
        case_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        unit TEXT NOT NULL,
        estimate {REAL} NOT NULL,
        lower {REAL},
        upper {REAL},
        n {INT} NOT NULL,
        PRIMARY KEY (run_id, device, case_id, metric)
    );
    INSERT INTO metrics_v2
        SELECT m.run_id, r.device, m.case_id, m.metric, m.unit, m.estimate, m.lower,
               m.upper, m.n
        FROM metrics m JOIN runs r ON r.run_id = m.run_id;
    DROP TABLE metrics;
    DROP TABLE cases;
    DROP TABLE runs;
    ALTER TABLE runs_v2 RENAME TO runs;
    ALTER TABLE cases_v2 RENAME TO cases;
    ALTER TABLE metrics_v2 RENAME TO metrics;
    CREATE INDEX cases_by_case ON cases(case_id);
    CREATE INDEX runs_by_commit ON runs(git_commit);",
];

/// The newest schema version this melt writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `version` (1-based) as `engine` spells it.
pub fn render(version: i64, engine: Engine) -> String {
    let (int, real, boolean) = match engine {
        Engine::Sqlite => ("INTEGER", "REAL", "INTEGER"),
        Engine::Postgres => ("BIGINT", "DOUBLE PRECISION", "BOOLEAN"),
    };
    MIGRATIONS[(version - 1) as usize]
        .replace("{INT}", int)
        .replace("{REAL}", real)
        .replace("{BOOL}", boolean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_keeps_the_first_schema_text_melt_shipped() {
        let v1 = render(1, Engine::Sqlite);
        assert!(v1.contains("git_dirty INTEGER,") && v1.contains("estimate REAL NOT NULL"));
        assert!(!v1.contains('{'), "{v1}");
    }

    #[test]
    fn postgres_gets_64_bit_numbers_and_booleans() {
        for v in 1..=VERSION {
            let sql = render(v, Engine::Postgres);
            assert!(!sql.contains('{') && !sql.contains(" REAL"), "{sql}");
            assert!(sql.contains("git_dirty BOOLEAN") && sql.contains("tokens BIGINT"));
        }
    }
}
