//! melt-report end to end, one binary: the paired gate's seeded trials, and the history on a
//! real PostgreSQL server.

mod paired_trials;
mod shared_history;
