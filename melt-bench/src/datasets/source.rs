//! Where a task's data comes from: one of the sets melt ships (melt-bench's `data/`,
//! embedded in every bench binary, so a device needs nothing pushed) or a file by path.
//!
//! On the command line a shipped set is `melt:NAME`, or a bare `NAME` that is not also an
//! existing file. In `summary.json` a source is the same string: `melt:NAME` or the path.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DatasetError;

/// The data sets embedded in melt (`data/README.md` has their sources and licences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shipped {
    /// The paper's 50 conversations (`melt/conversations.json`, MIT).
    Conversations,
    /// The paper's sustained run, one 48-prompt conversation (`melt/input_sustained.json`).
    Sustained,
    /// TruthfulQA, 817 questions scored as MC1 (`accuracy/TruthfulQA.csv`, Apache-2.0).
    TruthfulQa,
    /// OpenBookQA's 500 test questions (`accuracy/openbookqa.jsonl`, Apache-2.0).
    OpenBookQa,
    /// Shakespeare's plays, 1.1 MB, for perplexity (`text/tinyshakespeare.txt`, public domain).
    TinyShakespeare,
}

/// The prefix that always means a shipped set.
pub const SHIPPED_PREFIX: &str = "melt:";

/// Each set's name on a command line, its file under melt-bench's `data/`, and the
/// file's text, embedded — one row per set, so the three cannot drift apart.
macro_rules! shipped_table {
    ($($set:ident: $name:literal, $rel:literal;)*) => {
        const TABLE: &[(Shipped, &str, &str, &str)] = &[$((
            Shipped::$set,
            $name,
            $rel,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/", $rel)),
        )),*];
    };
}

shipped_table! {
    Conversations: "conversations", "melt/conversations.json";
    Sustained: "sustained", "melt/input_sustained.json";
    TruthfulQa: "truthfulqa", "accuracy/TruthfulQA.csv";
    OpenBookQa: "openbookqa", "accuracy/openbookqa.jsonl";
    TinyShakespeare: "tinyshakespeare", "text/tinyshakespeare.txt";
}

impl Shipped {
    pub const ALL: [Shipped; 5] = [
        Shipped::Conversations,
        Shipped::Sustained,
        Shipped::TruthfulQa,
        Shipped::OpenBookQa,
        Shipped::TinyShakespeare,
    ];

    fn row(self) -> &'static (Shipped, &'static str, &'static str, &'static str) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every shipped set has a row")
    }

    /// The name a command line uses.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The file under melt-bench's `data/`.
    pub fn relative_path(self) -> &'static str {
        self.row().2
    }

    /// The file's name: what task ids and format detection go by, as for a file by path.
    pub fn file_name(self) -> &'static str {
        let p = self.relative_path();
        p.rsplit('/').next().unwrap_or(p)
    }

    /// The embedded text, as in the repository.
    pub fn text(self) -> &'static str {
        self.row().3
    }

    pub fn from_name(name: &str) -> Option<Shipped> {
        Shipped::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Every name, for messages: `conversations, sustained, ...`.
    pub fn names() -> String {
        Shipped::ALL.map(Shipped::name).join(", ")
    }
}

/// A task's data: a shipped set or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    Shipped(Shipped),
    File(PathBuf),
}

impl DataSource {
    /// A command-line value: `melt:NAME` is a shipped set (an unknown name is an error that
    /// lists the known ones); a bare shipped name is one too unless a file of that name
    /// exists; anything else is a path.
    pub fn from_arg(arg: &str) -> Result<DataSource, DatasetError> {
        if let Some(name) = arg.strip_prefix(SHIPPED_PREFIX) {
            return Shipped::from_name(name)
                .map(DataSource::Shipped)
                .ok_or_else(|| DatasetError::UnknownShipped(name.to_string(), Shipped::names()));
        }
        match Shipped::from_name(arg) {
            Some(s) if !Path::new(arg).exists() => Ok(DataSource::Shipped(s)),
            _ => Ok(DataSource::File(arg.into())),
        }
    }

    /// The file's name (a shipped set's own file name), for task ids and reports.
    pub fn file_name(&self) -> Cow<'_, str> {
        match self {
            DataSource::Shipped(s) => Cow::Borrowed(s.file_name()),
            DataSource::File(p) => p
                .file_name()
                .map_or_else(|| p.to_string_lossy(), |n| n.to_string_lossy()),
        }
    }

    /// The whole text; a file that cannot be read or is not UTF-8 is an error naming it.
    pub fn text(&self) -> Result<Cow<'static, str>, DatasetError> {
        match self {
            DataSource::Shipped(s) => Ok(Cow::Borrowed(s.text())),
            DataSource::File(p) => {
                let bytes = std::fs::read(p).map_err(|e| DatasetError::Io(p.clone(), e))?;
                String::from_utf8(bytes)
                    .map(Cow::Owned)
                    .map_err(|e| DatasetError::Invalid {
                        path: p.clone(),
                        why: format!("not UTF-8 text: {e}"),
                    })
            }
        }
    }

    /// How errors name the source: the path, or `melt:NAME`.
    pub fn as_path(&self) -> PathBuf {
        match self {
            DataSource::Shipped(_) => PathBuf::from(self.to_string()),
            DataSource::File(p) => p.clone(),
        }
    }
}

impl From<PathBuf> for DataSource {
    fn from(p: PathBuf) -> Self {
        DataSource::File(p)
    }
}

impl From<&Path> for DataSource {
    fn from(p: &Path) -> Self {
        DataSource::File(p.to_path_buf())
    }
}

impl From<Shipped> for DataSource {
    fn from(s: Shipped) -> Self {
        DataSource::Shipped(s)
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Shipped(s) => write!(f, "{SHIPPED_PREFIX}{}", s.name()),
            DataSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for DataSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `melt:NAME` back to the shipped set; anything else is the path it was written from (a
/// file called `openbookqa` must round-trip as a file, so bare names are not resolved here).
impl<'de> Deserialize<'de> for DataSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix(SHIPPED_PREFIX) {
            Some(name) => Shipped::from_name(name)
                .map(DataSource::Shipped)
                .ok_or_else(|| serde::de::Error::custom(format!("no shipped data set `{name}`"))),
            None => Ok(DataSource::File(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded copies are the repository's files, byte for byte, as `SHA256SUMS` says.
    #[test]
    fn embedded_sets_match_the_repository_and_its_checksums() {
        use sha2::{Digest, Sha256};
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let sums = std::fs::read_to_string(data.join("SHA256SUMS")).unwrap();
        for s in Shipped::ALL {
            let line = sums
                .lines()
                .find(|l| l.ends_with(&format!("  {}", s.relative_path())))
                .unwrap_or_else(|| panic!("{} is not in data/SHA256SUMS", s.relative_path()));
            let want = line.split_whitespace().next().unwrap();
            let got = format!("{:x}", Sha256::digest(s.text().as_bytes()));
            assert_eq!(got, want, "{}", s.name());
            let on_disk = std::fs::read_to_string(data.join(s.relative_path())).unwrap();
            assert!(on_disk == s.text(), "{} differs from data/", s.name());
        }
        assert_eq!(
            sums.lines().count(),
            Shipped::ALL.len(),
            "a set not embedded"
        );
    }

    #[test]
    fn names_resolve_and_round_trip() {
        assert_eq!(
            DataSource::from_arg("openbookqa").unwrap(),
            DataSource::Shipped(Shipped::OpenBookQa)
        );
        assert_eq!(
            DataSource::from_arg("melt:tinyshakespeare").unwrap(),
            DataSource::Shipped(Shipped::TinyShakespeare)
        );
        assert_eq!(
            DataSource::from_arg("q/openbookqa.jsonl").unwrap(),
            DataSource::File("q/openbookqa.jsonl".into())
        );
        let e = DataSource::from_arg("melt:shakespeare")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`shakespeare`") && e.contains("tinyshakespeare"),
            "{e}"
        );
        // A file of a shipped set's name, where it exists, is the file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conversations");
        std::fs::write(&file, "[]").unwrap();
        let arg = file.to_str().unwrap();
        assert_eq!(
            DataSource::from_arg(arg).unwrap(),
            DataSource::File(file.clone())
        );
        for s in [
            DataSource::Shipped(Shipped::Sustained),
            DataSource::File(file),
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(
                serde_json::from_str::<DataSource>(&json).unwrap(),
                s,
                "{json}"
            );
        }
        assert_eq!(
            DataSource::Shipped(Shipped::TruthfulQa).file_name(),
            "TruthfulQA.csv"
        );
    }
}
