use super::*;
use melt_testkit::summaries::summary;
use rusqlite::Connection;

fn samples(ids: &[&str]) -> BTreeMap<String, Vec<f64>> {
    ids.iter()
        .map(|i| (i.to_string(), vec![1.0e9, 1.1e9, 0.9e9]))
        .collect()
}

fn key(run_id: &str, device: &str) -> RunKey {
    RunKey {
        run_id: run_id.into(),
        device: device.into(),
    }
}

#[test]
fn records_round_trip_and_answer_queries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("melt/history.sqlite");
    let mut h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), schema::VERSION);
    let git = GitState {
        commit: Some("c0ffee".into()),
        dirty: Some(false),
    };
    let ids = ["m/tg128/a", "m/tg128/b"];
    h.record(
        &summary("2026-11-24T10-00-00Z-1", &ids, 70.0),
        &samples(&ids),
        &git,
        "host",
    )
    .unwrap();
    h.record(
        &summary("2026-11-24T11-00-00Z-2", &ids[..1], 75.0),
        &samples(&ids[..1]),
        &GitState::default(),
        "pixel",
    )
    .unwrap();
    drop(h);

    // Reopening keeps everything and does not migrate again.
    let mut h = History::open(&path).unwrap();
    let runs = h.runs(None, 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0].key,
        key("2026-11-24T11-00-00Z-2", "pixel"),
        "most recent first"
    );
    assert_eq!(runs[0].cases, 1);
    assert_eq!(runs[1].git_commit.as_deref(), Some("c0ffee"));
    assert_eq!(runs[1].git_dirty, Some(false));
    assert_eq!(h.runs(Some("host"), 10).unwrap().len(), 1);
    let m = h.metric("tg128/a", "tokens_per_second", None, 10).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].estimate, m[1].estimate), (75.0, 70.0));
    assert_eq!((m[1].lower, m[1].n), (Some(69.0), 3));
    let on_pixel = h
        .metric("tg128/a", "tokens_per_second", Some("pixel"), 10)
        .unwrap();
    assert_eq!(on_pixel.len(), 1);
    // Every metric of a case comes back as the gate needs it.
    let first = key("2026-11-24T10-00-00Z-1", "host");
    let cm = h.case_metrics(&first, "m/tg128/b").unwrap();
    let t = &cm["tokens_per_second"];
    assert_eq!(
        (t.unit.as_str(), t.estimate, t.upper, t.n),
        ("tok/s", 70.0, Some(71.0), 3)
    );
    assert!(h
        .case_metrics(&key("2026-11-24T11-00-00Z-2", "pixel"), "m/tg128/b")
        .unwrap()
        .is_empty());
    assert_eq!(
        h.latest_run_of_commit("c0ffee", "host", None).unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        h.latest_run_of_commit("c0ffee", "host", Some(&first))
            .unwrap(),
        None
    );
    assert_eq!(
        h.latest_run_of_commit("c0ffee", "pixel", None).unwrap(),
        None,
        "another device's run of the commit is not this device's baseline"
    );
    assert_eq!(
        h.latest_run_of_commit("deadbeef", "host", None).unwrap(),
        None
    );
    // The drift estimate's input: each run's estimate with the code it ran, newest first,
    // on one device.
    assert_eq!(
        h.recent_estimates("m/tg128/a", "tokens_per_second", "host", &[], 10)
            .unwrap(),
        [("c0ffee".to_string(), 70.0)]
    );
    assert_eq!(
        h.recent_estimates(
            "m/tg128/a",
            "tokens_per_second",
            "host",
            &["2026-11-24T10-00-00Z-1"],
            10
        )
        .unwrap()
        .len(),
        0
    );
    assert_eq!(h.cases_of_run(&first).unwrap(), ["m/tg128/a", "m/tg128/b"]);
    let (tokens, times) = h.case_samples(&first, "m/tg128/b").unwrap().unwrap();
    assert_eq!((tokens, times.len()), (128, 3));
    assert!(h.case_samples(&first, "nope").unwrap().is_none());
}

#[test]
fn a_run_is_its_id_and_its_device_and_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(&dir.path().join("h.sqlite")).unwrap();
    let ids = ["m/tg128/a"];
    let run = summary("2026-11-24T10-00-00Z-suite", &ids, 70.0);
    let record = |h: &mut History, device: &str| {
        h.record(&run, &samples(&ids), &GitState::default(), device)
            .unwrap()
    };
    // Two CI runners starting the same bench in the same second name their runs alike.
    assert_eq!(record(&mut h, "pixel"), Written::Added);
    assert_eq!(record(&mut h, "jetson"), Written::Added);
    assert_eq!(record(&mut h, "pixel"), Written::AlreadyThere);
    let runs = h.runs(None, 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.cases == 1));
    assert_eq!(
        h.metric("m/", "tokens_per_second", None, 10).unwrap().len(),
        2
    );
}

#[test]
fn pushing_copies_whole_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = History::open(&dir.path().join("a.sqlite")).unwrap();
    let mut b = History::open(&dir.path().join("b.sqlite")).unwrap();
    let ids = ["m/tg128/a", "m/pp512/a"];
    for (i, commit) in ["c1", "c2", "c1"].iter().enumerate() {
        let git = GitState {
            commit: Some(commit.to_string()),
            dirty: Some(i == 2),
        };
        let id = format!("2026-11-24T10-00-0{i}Z-suite");
        a.record(
            &summary(&id, &ids, 70.0 + i as f64),
            &samples(&ids),
            &git,
            "host",
        )
        .unwrap();
    }
    // b has a run of its own, and the same run id on another device.
    b.record(
        &summary("2026-11-24T10-00-00Z-suite", &ids, 50.0),
        &samples(&ids),
        &GitState::default(),
        "pixel",
    )
    .unwrap();
    let only_c1 = RunFilter {
        commit: Some("c1".into()),
        device: None,
    };
    let pushed = a.push(&mut b, &only_c1).unwrap();
    assert_eq!(pushed.added.len(), 2);
    assert_eq!(pushed.already_there, 0);
    assert_eq!(
        pushed.added[0],
        key("2026-11-24T10-00-00Z-suite", "host"),
        "oldest first"
    );
    let all = a.push(&mut b, &RunFilter::default()).unwrap();
    assert_eq!((all.added.len(), all.already_there), (1, 2));
    let again = a.push(&mut b, &RunFilter::default()).unwrap();
    assert_eq!((again.added.len(), again.already_there), (0, 3));
    // Copied as written: every field, case, sample and metric.
    for r in a.runs(None, 10).unwrap() {
        assert_eq!(a.read(&r.key).unwrap(), b.read(&r.key).unwrap());
    }
    assert_eq!(b.runs(None, 10).unwrap().len(), 4);
    let first = key("2026-11-24T10-00-02Z-suite", "host");
    assert_eq!(b.runs(None, 10).unwrap()[0].git_dirty, Some(true));
    assert_eq!(
        b.latest_run_of_commit("c1", "host", None).unwrap(),
        Some(key("2026-11-24T10-00-00Z-suite", "host")),
        "a clean run is preferred to a newer dirty one"
    );
    assert_eq!(b.cases_of_run(&first).unwrap().len(), 2);
}

#[test]
fn a_first_schema_file_is_migrated_with_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    // A history as melt wrote it before runs were keyed by device.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&schema::render(1, store::Engine::Sqlite))
        .unwrap();
    conn.execute_batch(
        "INSERT INTO runs VALUES ('r1', '2026-11-24T10-00-00Z', 'c0ffee', 0, 'pixel', '{}', 1);
         INSERT INTO cases VALUES ('r1', 'm/tg128/a', 'llama.cpp', 'v', 'm', 'ab', '{}',
                                   'tg128', 128, '[1.0,2.0]');
         INSERT INTO metrics VALUES ('r1', 'm/tg128/a', 'tokens_per_second', 'tok/s', 70.0,
                                     69.0, 71.0, 2);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let mut h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), schema::VERSION);
    let r1 = key("r1", "pixel");
    assert_eq!(h.runs(None, 10).unwrap()[0].key, r1);
    assert_eq!(
        h.case_samples(&r1, "m/tg128/a").unwrap(),
        Some((128, vec![1.0, 2.0]))
    );
    assert_eq!(
        h.case_metrics(&r1, "m/tg128/a").unwrap()["tokens_per_second"].estimate,
        70.0
    );
    assert_eq!(h.runs(None, 10).unwrap()[0].git_dirty, Some(false));
}

#[test]
fn a_corrupt_file_is_an_error_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite");
    let junk = b"this is not sqlite at all, just some bytes that fill a page.....".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = History::open(&path).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, HistoryError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("history.sqlite") && text.contains("left untouched"),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), junk, "never silently reset");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = History::open(&path).err().unwrap();
    assert!(
        matches!(err, HistoryError::TooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn concurrent_writers_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                // Each writer opens its own connection, as separate processes would.
                let mut h = History::open(&path).unwrap();
                for r in 0..5 {
                    let id = format!("2026-11-24T10-00-0{w}Z-{r}");
                    let ids = ["m/tg128/a", "m/pp512/a"];
                    h.record(
                        &summary(&id, &ids, 70.0),
                        &samples(&ids),
                        &GitState::default(),
                        "host",
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut h = History::open(&path).unwrap();
    let runs = h.runs(None, 100).unwrap();
    assert_eq!(runs.len(), 30);
    assert!(runs.iter().all(|r| r.cases == 2));
    assert_eq!(
        h.metric("m/", "tokens_per_second", None, 1000)
            .unwrap()
            .len(),
        60
    );
}
