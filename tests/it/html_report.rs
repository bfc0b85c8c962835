//! The HTML report end to end, opened in headless Chromium.

use std::process::Command;

use melt_testkit::needs;

use crate::common::*;

#[test]
fn the_html_report_opens_in_chromium_with_every_plot_and_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(&model, dir.path(), &["--sample-size", "3"]);
    let page = dir.path().join("melt/report/index.html");
    assert!(page.is_file());
    let profile = tempfile::tempdir().unwrap();
    // The flags the workplace's own probe uses: no network, no first-run work.
    let dom = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output();
    let dom = match dom {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("chromium failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            needs::missing(
                &format!("chromium cannot run ({e})"),
                "`apt-get install chromium`",
            );
            return;
        }
    };
    // One comparison chart, a violin per case, a latency plot per decode case (3 of 4
    // workloads, at 2 thread counts), and the probes' plots — memory for every case on Linux,
    // power and temperature where this machine has sensors: all decoded by the browser.
    let images = std::fs::read_to_string(&page)
        .unwrap()
        .matches("<img ")
        .count();
    assert!(images >= 15 + out.summary.cases.len(), "{images} images");
    assert!(
        dom.contains(&format!("data-images=\"{images}\"")),
        "{}",
        &dom[..dom.len().min(400)]
    );
    assert!(dom.contains("data-broken-images=\"0\""));
    for c in &out.summary.cases {
        let tps = format!("{:.2}", c.metrics["tokens_per_second"].estimate);
        assert!(dom.contains(&tps), "{} shows {tps}", c.id);
    }
}
