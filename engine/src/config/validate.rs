//! The problem collector every section's `validate` writes to: each problem is a key path and
//! what is wrong there, kept in the order the sections were checked.
//!
//! A section checks only itself (`fn validate(&self, path: &str, problems: &mut Problems)`);
//! `Config::validate` calls the sections in document order and the loader reports the first
//! problem found, so the error is the one a reader meets first in the file.

/// What is wrong with a configuration, in the order found: (key path, message).
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<(String, String)>);

impl Problems {
    /// Records that the value at `path` is wrong because of `message`.
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }

    /// Ok when nothing was recorded, otherwise the first problem.
    pub(super) fn into_result(self) -> Result<(), (String, String)> {
        match self.0.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_problem_is_reported() {
        assert_eq!(Problems::default().into_result(), Ok(()));
        let mut p = Problems::default();
        p.add("a.b", "first");
        p.add("c", String::from("second"));
        assert_eq!(p.into_result(), Err(("a.b".to_string(), "first".to_string())));
    }
}
