//! Quoting for the POSIX shell on the far side of `ssh` and `adb shell`, which both join
//! their arguments with spaces and hand the result to `sh -c`: every device path, name and
//! env value melt puts in a remote command goes through [`quote`], so none can run commands.

/// `s` as one single-quoted shell word: `it's` → `'it'\''s'`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether `name` can be an environment variable name in a `NAME=value cmd` prefix.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A command line of quoted words.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What a real `sh` makes of `script`: its arguments, one per line.
    fn words_seen_by_sh(script: &str) -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("for w in {script}; do printf '%s\\n' \"$w\"; done"))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn hostile_words_reach_sh_verbatim() {
        let hostile = [
            "plain",
            "with space",
            "it's",
            "$(touch /tmp/melt-pwned)",
            "`id`",
            "a;b|c&d>e<f",
            "\"double\" \\back",
            "*",
            "",
            "new\nline",
        ];
        for w in hostile {
            if w.contains('\n') {
                continue; // `for w in` splits on newlines inside the word; checked below
            }
            assert_eq!(words_seen_by_sh(&quote(w)), [w], "{w:?}");
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("new\nline")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"new\nline");
        assert!(!std::path::Path::new("/tmp/melt-pwned").exists());
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("OMP_NUM_THREADS") && is_env_name("_x1"));
        for bad in ["", "1A", "A-B", "A B", "A;rm", "A=B"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }
}
