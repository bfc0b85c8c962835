//! melt-report: what only a host reads, built on a run's files and the report sinks of
//! `melt-bench` — the run history in SQLite ([`history`]), the HTML page ([`html`]), other
//! tools' formats ([`export`]), the regression gate ([`gate`]) and an external power meter's
//! import ([`meter`]). A bench binary built for a device leaves all of it out; the host that
//! drives the device reports once, from the stream.

pub mod export;
pub mod gate;
pub mod history;
pub mod html;
pub mod meter;
pub mod sinks;
pub mod trends;

pub use sinks::host_reports;
