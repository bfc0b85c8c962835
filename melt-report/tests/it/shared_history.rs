//! The history on a real PostgreSQL server (Debian's, started by the test on loopback): the
//! same answers as the SQLite file, many writers at once, a server that stops mid-push,
//! wrong passwords and unreachable hosts, hostile names, and a schema from a newer melt.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use melt_bench::report::{Report, RunReport};
use melt_bench::store::Layout;
use melt_report::history::{
    schema, GitState, History, HistoryError, Location, RunFilter, RunKey, Written,
};
use melt_report::sinks::HistorySink;
use melt_testkit::free_port;
use melt_testkit::postgres::Postgres;
use melt_testkit::summaries::summary;

fn samples(ids: &[&str], n: usize) -> BTreeMap<String, Vec<f64>> {
    ids.iter()
        .map(|i| (i.to_string(), (0..n).map(|k| 1.0e9 + k as f64).collect()))
        .collect()
}

fn git(commit: &str, dirty: bool) -> GitState {
    GitState {
        commit: Some(commit.into()),
        dirty: Some(dirty),
    }
}

fn key(run_id: &str, device: &str) -> RunKey {
    RunKey {
        run_id: run_id.into(),
        device: device.into(),
    }
}

fn pg(dir: &Path) -> Option<(Postgres, Location)> {
    let server = Postgres::create(dir)?;
    let at = Location::Postgres(server.url());
    Some((server, at))
}

/// A direct connection, for what melt itself never does (reading the catalog, rewriting the
/// schema version).
fn client(server: &Postgres) -> postgres::Client {
    postgres::Client::connect(&server.url(), postgres::NoTls).unwrap()
}

/// Every run in the database with its number of cases and metrics.
fn contents(server: &Postgres) -> BTreeMap<(String, String), (i64, i64)> {
    client(server)
        .query(
            "SELECT r.run_id, r.device,
                    (SELECT COUNT(*) FROM cases c WHERE c.run_id = r.run_id AND c.device = r.device),
                    (SELECT COUNT(*) FROM metrics m WHERE m.run_id = r.run_id AND m.device = r.device)
             FROM runs r",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect()
}

#[test]
fn both_stores_answer_every_query_alike() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_server, url)) = pg(dir.path()) else {
        return;
    };
    let mut stores = [
        History::open(&dir.path().join("h.sqlite")).unwrap(),
        History::at(&url).unwrap(),
    ];
    let ids = ["m/tg128/a", "m/pp512/a"];
    for h in &mut stores {
        assert_eq!(h.schema_version().unwrap(), schema::VERSION);
        for (i, (commit, device, dirty)) in [
            ("c1", "pixel", false),
            ("c1", "jetson", false),
            ("c2", "pixel", true),
            ("c2", "pixel", false),
        ]
        .into_iter()
        .enumerate()
        {
            let s = summary(
                &format!("2026-11-25T10-00-0{i}Z-suite"),
                &ids,
                70.0 + i as f64,
            );
            let written = h
                .record(&s, &samples(&ids, 4), &git(commit, dirty), device)
                .unwrap();
            assert_eq!(written, Written::Added);
        }
    }
    let [sqlite, postgres] = &mut stores;
    let pixel_c2 = key("2026-11-25T10-00-03Z-suite", "pixel");
    for h in [sqlite, postgres] {
        let runs = h.runs(None, 10).unwrap();
        assert_eq!(runs.len(), 4, "{}", h.location());
        assert_eq!(runs[0].key, pixel_c2);
        assert_eq!((runs[0].cases, runs[1].git_dirty), (2, Some(true)));
        assert_eq!(h.runs(Some("jetson"), 10).unwrap().len(), 1);
        let m = h.metric("tg128", "tokens_per_second", None, 10).unwrap();
        assert_eq!(
            m.iter().map(|m| m.estimate).collect::<Vec<_>>(),
            [73.0, 72.0, 71.0, 70.0]
        );
        assert_eq!(
            (m[0].lower, m[0].upper, m[0].n),
            (Some(72.0), Some(74.0), 3)
        );
        assert_eq!(
            h.metric("tg128", "tokens_per_second", Some("pixel"), 2)
                .unwrap()
                .len(),
            2
        );
        // A clean run is preferred to a newer dirty one; other devices' runs never answer.
        assert_eq!(
            h.latest_run_of_commit("c2", "pixel", None).unwrap(),
            Some(pixel_c2.clone())
        );
        assert_eq!(
            h.latest_run_of_commit("c2", "pixel", Some(&pixel_c2))
                .unwrap(),
            Some(key("2026-11-25T10-00-02Z-suite", "pixel"))
        );
        assert_eq!(h.latest_run_of_commit("c2", "jetson", None).unwrap(), None);
        assert_eq!(
            h.recent_estimates("m/tg128/a", "tokens_per_second", "pixel", &[], 10)
                .unwrap(),
            [
                ("c2".to_string(), 73.0),
                ("c2+dirty".to_string(), 72.0),
                ("c1".to_string(), 70.0)
            ]
        );
        assert_eq!(
            h.cases_of_run(&pixel_c2).unwrap(),
            ["m/pp512/a", "m/tg128/a"]
        );
        assert_eq!(
            h.case_samples(&pixel_c2, "m/pp512/a").unwrap(),
            Some((128, vec![1.0e9, 1.0e9 + 1.0, 1.0e9 + 2.0, 1.0e9 + 3.0]))
        );
        let cm = h.case_metrics(&pixel_c2, "m/pp512/a").unwrap();
        assert_eq!(cm["tokens_per_second"].estimate, 73.0);
    }
}

#[test]
fn names_full_of_quotes_and_sql_are_stored_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url)) = pg(dir.path()) else {
        return;
    };
    let mut h = History::at(&url).unwrap();
    let hostile = [
        "m/tg128/it's \"quoted\"; DROP TABLE runs; --",
        "m/pp%_\\512/$1 ? ?1 :name @x",
        "m/tg/ünïcødé ✓ \t tab",
    ];
    let device = "Robert'); DROP TABLE runs;-- \"phone\" 100%";
    let run = "2026-11-25T10-00-00Z-o'clock";
    h.record(
        &summary(run, &hostile, 70.0),
        &samples(&hostile, 2),
        &git("c'1", false),
        device,
    )
    .unwrap();
    let k = key(run, device);
    let mut cases = hostile.map(String::from).to_vec();
    cases.sort();
    assert_eq!(h.cases_of_run(&k).unwrap(), cases);
    assert_eq!(h.runs(Some(device), 10).unwrap()[0].key, k);
    assert_eq!(
        h.latest_run_of_commit("c'1", device, None).unwrap(),
        Some(k.clone())
    );
    // A case filter is a plain substring: `%` and `_` are characters, not patterns.
    let m = h
        .metric("pp%_\\512/$1", "tokens_per_second", Some(device), 10)
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].case_id, hostile[1]);
    assert!(h
        .metric("pp%512", "tokens_per_second", None, 10)
        .unwrap()
        .is_empty());
    // And the same names survive the trip into a SQLite file and back.
    let mut file = History::open(&dir.path().join("copy.sqlite")).unwrap();
    let pushed = h.push(&mut file, &RunFilter::default()).unwrap();
    assert_eq!(pushed.added.len(), 1);
    assert_eq!(pushed.added[0], k);
    assert_eq!(file.cases_of_run(&k).unwrap(), cases);
    assert_eq!(contents(&server).len(), 1, "every table is still there");
}

#[test]
fn a_wrong_password_or_an_unreachable_host_is_a_clear_error_and_the_run_stays_local() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, _)) = pg(dir.path()) else {
        return;
    };
    let wrong = Location::Postgres(server.url_with("not-the-password"));
    let err = History::at(&wrong).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, HistoryError::Connect { .. }), "{text}");
    assert!(
        text.contains("password authentication failed")
            && text.contains(&format!("postgres://melt@127.0.0.1:{}/melt", server.port))
            && !text.contains("not-the-password"),
        "{text}"
    );
    let nobody = Location::Postgres(format!("postgres://melt:pw@127.0.0.1:{}/melt", free_port()));
    let start = Instant::now();
    let err = History::at(&nobody).err().unwrap().to_string();
    assert!(
        err.contains("cannot reach the history") && err.contains("refused"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    // No TLS here: a URL that asks for it is refused, not downgraded.
    let tls = Location::Postgres(format!("{}?sslmode=require", server.url()));
    let err = History::at(&tls).err().unwrap().to_string();
    assert!(
        err.contains("sslmode=require") && err.contains("SSH tunnel"),
        "{err}"
    );

    // A run's history sink: the shared history refuses, the local file keeps the run, and
    // the error says how to send it later.
    for shared in [wrong, nobody] {
        let target = tempfile::tempdir().unwrap();
        let layout = Layout::at(target.path());
        let s = summary("2026-11-25T10-00-00Z-suite", &["m/tg128/a"], 70.0);
        let sink = HistorySink {
            shared: Some(shared),
        };
        let err = sink
            .run_end(&RunReport {
                layout: &layout,
                summary: &s,
                samples: &BTreeMap::new(),
                probes: &BTreeMap::new(),
                git_dir: target.path(),
            })
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("is kept in") && err.contains("history push --to"),
            "{err}"
        );
        let mut local = History::open(&layout.history_path()).unwrap();
        assert_eq!(local.runs(None, 10).unwrap().len(), 1);
    }
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url)) = pg(dir.path()) else {
        return;
    };
    History::at(&url).unwrap();
    client(&server)
        .execute("UPDATE melt_schema SET version = 99", &[])
        .unwrap();
    let err = History::at(&url).err().unwrap();
    let text = err.to_string();
    assert!(
        matches!(err, HistoryError::TooNew { found: 99, known, .. } if known == schema::VERSION),
        "{text}"
    );
    assert!(
        text.contains("schema 99")
            && text.contains(&format!("up to {}", schema::VERSION))
            && text.contains("left untouched"),
        "{text}"
    );
    let version: i64 = client(&server)
        .query_one("SELECT version FROM melt_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 99, "refused, not rewritten");
}

#[test]
fn a_first_schema_database_is_migrated_with_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url)) = pg(dir.path()) else {
        return;
    };
    // The first schema, as PostgreSQL spells it, with a run in it.
    let mut c = client(&server);
    c.batch_execute(&schema::render(1, melt_report::history::Engine::Postgres))
        .unwrap();
    c.batch_execute(
        "CREATE TABLE melt_schema (version BIGINT NOT NULL);
         INSERT INTO melt_schema VALUES (1);
         INSERT INTO runs VALUES ('r1', '2026-11-24T10-00-00Z', 'c0ffee', false, 'pixel', '{}', 1);
         INSERT INTO cases VALUES ('r1', 'm/tg128/a', 'llama.cpp', 'v', 'm', 'ab', '{}',
                                   'tg128', 128, '[1.0,2.0]');
         INSERT INTO metrics VALUES ('r1', 'm/tg128/a', 'tokens_per_second', 'tok/s', 70.0,
                                     69.0, 71.0, 2);",
    )
    .unwrap();
    let mut h = History::at(&url).unwrap();
    assert_eq!(h.schema_version().unwrap(), schema::VERSION);
    let r1 = key("r1", "pixel");
    assert_eq!(h.runs(None, 10).unwrap()[0].key, r1);
    assert_eq!(
        h.case_samples(&r1, "m/tg128/a").unwrap(),
        Some((128, vec![1.0, 2.0]))
    );
    // The same run id on another device is a different run now.
    let s = summary("r1", &["m/tg128/a"], 60.0);
    let written = h
        .record(
            &s,
            &samples(&["m/tg128/a"], 2),
            &GitState::default(),
            "jetson",
        )
        .unwrap();
    assert_eq!(written, Written::Added);
}

/// A local history with `n` runs of three cases, each case with many samples (so that a push
/// takes long enough to be cut off).
fn local_history(path: &Path, n: usize, device: &str) -> History {
    let mut h = History::open(path).unwrap();
    let ids = ["m/tg128/a", "m/pp512/a", "m/pp512+tg128/a"];
    for i in 0..n {
        let s = summary(
            &format!("2026-11-25T10-{:02}-{:02}Z-suite", i / 60, i % 60),
            &ids,
            70.0,
        );
        h.record(&s, &samples(&ids, 2000), &git("c1", false), device)
            .unwrap();
    }
    h
}

#[test]
fn a_push_cut_off_by_the_server_stopping_is_finished_by_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut server, url)) = pg(dir.path()) else {
        return;
    };
    const RUNS: usize = 600;
    let mut local = local_history(&dir.path().join("local.sqlite"), RUNS, "pixel");
    History::at(&url).unwrap();
    let pushing = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut shared = History::at(&url).unwrap();
            let out = local.push(&mut shared, &RunFilter::default());
            (local, out)
        })
    };
    // Stop the server once some runs are in, and long before all are.
    let mut watcher = client(&server);
    let start = Instant::now();
    loop {
        let n: i64 = watcher
            .query_one("SELECT COUNT(*) FROM runs", &[])
            .unwrap()
            .get(0);
        if n >= 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the push made no progress"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(watcher);
    server.stop();
    let (mut local, out) = pushing.join().unwrap();
    let err = out.expect_err("the push was cut off").to_string();
    assert!(
        err.contains(&format!("postgres://melt@127.0.0.1:{}/melt", server.port)),
        "the error names the history: {err}"
    );

    // Nothing half-written: every run there has all its cases and metrics.
    server.start();
    let there = contents(&server);
    assert!(!there.is_empty() && there.len() < RUNS, "{}", there.len());
    assert!(there.values().all(|&c| c == (3, 3)), "{there:?}");

    // The same push again finishes it, adding each run once.
    let mut shared = History::at(&url).unwrap();
    let pushed = local.push(&mut shared, &RunFilter::default()).unwrap();
    assert_eq!(pushed.already_there, there.len());
    assert_eq!(pushed.added.len(), RUNS - there.len());
    let all = contents(&server);
    assert_eq!(all.len(), RUNS);
    assert!(all.values().all(|&c| c == (3, 3)));
}

/// Set for the child processes of [`four_processes_push_and_record_at_once`]: what to do.
const WRITER_ENV: &str = "MELT_TEST_HISTORY_WRITER";

/// One of the four writers (a child process running only this test): records its own runs
/// straight into the shared history, and pushes its local file, which also holds runs every
/// writer has.
#[test]
fn history_writer_process() {
    let Ok(job) = std::env::var(WRITER_ENV) else {
        return;
    };
    let [url, local, device]: [&str; 3] = job.split('\n').collect::<Vec<_>>().try_into().unwrap();
    let mut shared = History::at(&Location::Postgres(url.into())).unwrap();
    let mut local = History::open(Path::new(local)).unwrap();
    let ids = ["m/tg128/a", "m/pp512/a"];
    for i in 0..15 {
        let s = summary(&format!("2026-11-25T11-00-{i:02}Z-live"), &ids, 70.0);
        shared
            .record(&s, &samples(&ids, 100), &git("c2", false), device)
            .unwrap();
        if i % 5 == 0 {
            local.push(&mut shared, &RunFilter::default()).unwrap();
        }
    }
    local.push(&mut shared, &RunFilter::default()).unwrap();
}

#[test]
fn four_processes_push_and_record_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url)) = pg(dir.path()) else {
        return;
    };
    let Location::Postgres(url) = url else {
        unreachable!()
    };
    // Each writer's file: 20 runs of the same device every writer shares ("lab"), and 10 of
    // its own.
    let files: Vec<_> = (0..4)
        .map(|w| {
            let path = dir.path().join(format!("w{w}.sqlite"));
            let mut h = local_history(&path, 20, "lab");
            let ids = ["m/tg128/a"];
            for i in 0..10 {
                let s = summary(&format!("2026-11-25T12-00-{i:02}Z-own"), &ids, 70.0);
                h.record(
                    &s,
                    &samples(&ids, 10),
                    &git("c1", false),
                    &format!("phone-{w}"),
                )
                .unwrap();
            }
            path
        })
        .collect();
    // No one has created the schema yet: the writers meet an empty database at once. Each is
    // this binary running one test, named by its path below the binary's root module.
    let (_, module) = module_path!().split_once("::").unwrap();
    let writer = format!("{module}::history_writer_process");
    let children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(w, path)| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", &writer, "--nocapture"])
                .env(WRITER_ENV, format!("{url}\n{}\nphone-{w}", path.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect::<Vec<_>>();
    let children: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (w, out) in children.iter().enumerate() {
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "writer {w}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = contents(&server);
    // 20 shared runs once, 4 × 10 pushed own runs, 4 × 15 recorded live.
    assert_eq!(all.len(), 20 + 40 + 60, "{all:?}");
    let whole = |(run, device): &(String, String), c: &(i64, i64)| match () {
        _ if device == "lab" => *c == (3, 3),
        _ if run.ends_with("-own") => *c == (1, 1),
        _ => *c == (2, 2),
    };
    assert!(all.iter().all(|(k, c)| whole(k, c)), "{all:?}");
    let version: i64 = client(&server)
        .query_one("SELECT version FROM melt_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, schema::VERSION, "migrated once, to the end");
}
