//! Files written whole: a reader never sees half of one.

use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;

/// `value` as pretty JSON at `path` (its folder made if need be): written beside it, then
/// renamed over it.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    fs::rename(&tmp, path)
}
