//! `cargo melt` end to end, one binary: a stranger's new project, and a history shared over
//! PostgreSQL.

mod new_project;
mod shared_history;
