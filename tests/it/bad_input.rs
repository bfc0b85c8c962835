//! Bad input end to end: missing and corrupt models, unknown names and flags get clear errors.

use melt::driver::{run_suite, DriverError};
use melt::Suite;

use crate::common::*;

#[test]
fn bad_models_and_names_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());

    // A text file named .gguf: every case fails with the file named, nothing panics.
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, "not a model").unwrap();
    let out = run(&fake, dir.path(), &["--sample-size", "3"]);
    assert!(out.failed() && out.summary.cases.is_empty());
    assert!(
        out.summary
            .errors
            .iter()
            .all(|e| e.message.contains("fake.gguf")),
        "{:?}",
        out.summary.errors
    );

    // A missing file.
    let out = run(
        &dir.path().join("absent.gguf"),
        dir.path(),
        &["--sample-size", "3"],
    );
    assert!(
        out.summary.errors[0]
            .message
            .contains("absent.gguf does not exist"),
        "{:?}",
        out.summary.errors
    );

    // A truncated GGUF.
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&cut, dir.path(), &["--sample-size", "3"]);
    assert!(
        out.summary.errors[0].message.contains("cut.gguf"),
        "{:?}",
        out.summary.errors
    );

    // An unknown backend.
    let err = run_suite(
        &suite(),
        &args(&model, dir.path(), &["--backend", "tensorrt"]),
    )
    .unwrap_err();
    assert!(matches!(err, DriverError::UnknownBackend { .. }));
    assert!(
        err.to_string().contains("tensorrt") && err.to_string().contains("llama.cpp"),
        "{err}"
    );

    // An unknown registry model: the case fails naming it and the registry's models.
    let toml = dir.path().join("melt.toml");
    std::fs::write(&toml, "[models.known]\nfile = \"k.gguf\"\nformat = \"gguf\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nsource = { path = \"/k.gguf\" }\n").unwrap();
    let named = Suite {
        models: vec!["gemma-99b".into()],
        manifest_dir: Some(dir.path().to_path_buf()),
        ..suite()
    };
    let mut a = args(&model, dir.path(), &["--sample-size", "3"]);
    a.models.clear();
    let out = run_suite(&named, &a).unwrap().measured().unwrap();
    let msg = &out.summary.errors[0].message;
    assert!(
        msg.contains("unknown model `gemma-99b`") && msg.contains("known"),
        "{msg}"
    );

    // A registry model not yet fetched says how to fetch it. (Its sha256 is all zeros, so no
    // cache holds it; the test sets no variable, which other tests' threads would read.)
    let cached = Suite {
        models: vec!["known".into()],
        ..named
    };
    let out = run_suite(&cached, &a).unwrap().measured().unwrap();
    let msg = &out.summary.errors[0].message;
    assert!(msg.contains("cargo melt models fetch known"), "{msg}");

    // A filter that matches nothing, and a bad regex.
    let err = run_suite(&suite(), &args(&model, dir.path(), &["pp9999"])).unwrap_err();
    assert!(err.to_string().contains("no case matches"), "{err}");
    let err = run_suite(&suite(), &args(&model, dir.path(), &["pp(("])).unwrap_err();
    assert!(err.to_string().contains("bad filter"), "{err}");
}
