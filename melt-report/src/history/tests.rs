use super::*;
use melt_testkit::summaries::summary;

fn samples(ids: &[&str]) -> BTreeMap<String, Vec<f64>> {
    ids.iter()
        .map(|i| (i.to_string(), vec![1.0e9, 1.1e9, 0.9e9]))
        .collect()
}

#[test]
fn records_round_trip_and_answer_queries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("melt/history.sqlite");
    let mut h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), MIGRATIONS.len() as i64);
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
    let h = History::open(&path).unwrap();
    let runs = h.runs(10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0].run_id, "2026-11-24T11-00-00Z-2",
        "most recent first"
    );
    assert_eq!((runs[0].device.as_str(), runs[0].cases), ("pixel", 1));
    assert_eq!(runs[1].git_commit.as_deref(), Some("c0ffee"));
    assert_eq!(runs[1].git_dirty, Some(false));
    let m = h.metric("tg128/a", "tokens_per_second", 10).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].estimate, m[1].estimate), (75.0, 70.0));
    assert_eq!((m[1].lower, m[1].n), (Some(69.0), 3));
    // Every metric of a case comes back as the gate needs it.
    let cm = h
        .case_metrics("2026-11-24T10-00-00Z-1", "m/tg128/b")
        .unwrap();
    let t = &cm["tokens_per_second"];
    assert_eq!(
        (t.unit.as_str(), t.estimate, t.upper, t.n),
        ("tok/s", 70.0, Some(71.0), 3)
    );
    assert!(h
        .case_metrics("2026-11-24T11-00-00Z-2", "m/tg128/b")
        .unwrap()
        .is_empty());
    assert_eq!(
        h.latest_run_of_commit("c0ffee", None).unwrap().as_deref(),
        Some("2026-11-24T10-00-00Z-1")
    );
    assert_eq!(
        h.latest_run_of_commit("c0ffee", Some("2026-11-24T10-00-00Z-1"))
            .unwrap(),
        None
    );
    assert_eq!(h.latest_run_of_commit("deadbeef", None).unwrap(), None);
    // The drift estimate's input: each run's estimate with the code it ran, newest first.
    assert_eq!(
        h.recent_estimates("m/tg128/a", "tokens_per_second", &[], 10)
            .unwrap(),
        [("unknown".to_string(), 75.0), ("c0ffee".to_string(), 70.0)]
    );
    assert_eq!(
        h.recent_estimates(
            "m/tg128/a",
            "tokens_per_second",
            &["2026-11-24T11-00-00Z-2"],
            10
        )
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        h.cases_of_run("2026-11-24T10-00-00Z-1").unwrap(),
        ["m/tg128/a", "m/tg128/b"]
    );
    let (tokens, times) = h
        .case_samples("2026-11-24T10-00-00Z-1", "m/tg128/b")
        .unwrap()
        .unwrap();
    assert_eq!((tokens, times.len()), (128, 3));
    assert!(h
        .case_samples("2026-11-24T10-00-00Z-1", "nope")
        .unwrap()
        .is_none());
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
    let h = History::open(&path).unwrap();
    let runs = h.runs(100).unwrap();
    assert_eq!(runs.len(), 30);
    assert!(runs.iter().all(|r| r.cases == 2));
    assert_eq!(h.metric("m/", "tokens_per_second", 1000).unwrap().len(), 60);
}
