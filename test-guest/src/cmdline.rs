//! The kernel command line: space-separated `key=value` words.

use thiserror::Error;

/// Most parameters a command line may hold.
pub const MAX_PARAMS: usize = 16;

/// A command line the guest cannot use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// A word without `=`.
    #[error("'{0}' is not a key=value parameter")]
    NotKeyValue(&'a str),
    /// A word starting with `=`.
    #[error("'{0}' has an empty key")]
    EmptyKey(&'a str),
    /// The same key given twice.
    #[error("parameter '{0}' is given more than once")]
    Duplicate(&'a str),
    /// More than [`MAX_PARAMS`] parameters.
    #[error("more than {MAX_PARAMS} parameters")]
    TooMany,
}

/// A parsed command line, borrowing the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline<'a> {
    params: [(&'a str, &'a str); MAX_PARAMS],
    len: usize,
}

impl<'a> Cmdline<'a> {
    /// Parses `text` (whitespace-separated `key=value` words; the value may
    /// be empty and may itself contain `=`).
    pub fn parse(text: &'a str) -> Result<Self, CmdlineError<'a>> {
        let mut cmdline = Cmdline {
            params: [("", ""); MAX_PARAMS],
            len: 0,
        };
        for word in text.split_ascii_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or(CmdlineError::NotKeyValue(word))?;
            if key.is_empty() {
                return Err(CmdlineError::EmptyKey(word));
            }
            if cmdline.get(key).is_some() {
                return Err(CmdlineError::Duplicate(key));
            }
            let slot = cmdline
                .params
                .get_mut(cmdline.len)
                .ok_or(CmdlineError::TooMany)?;
            *slot = (key, value);
            cmdline.len += 1;
        }
        Ok(cmdline)
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.params().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// All parameters, in command-line order.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.params[..self.len].iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_values() {
        let c = Cmdline::parse("  workload=compute\tsteps=1000 hz=  x=a=b ").unwrap();
        assert_eq!(c.get("workload"), Some("compute"));
        assert_eq!(c.get("steps"), Some("1000"));
        assert_eq!(c.get("hz"), Some(""));
        assert_eq!(c.get("x"), Some("a=b"));
        assert_eq!(c.get("missing"), None);
        let keys: Vec<_> = c.params().map(|(k, _)| k).collect();
        assert_eq!(keys, ["workload", "steps", "hz", "x"]);
    }

    #[test]
    fn empty() {
        let c = Cmdline::parse("").unwrap();
        assert_eq!(c.params().count(), 0);
        assert_eq!(Cmdline::parse("   ").unwrap().params().count(), 0);
    }

    #[test]
    fn errors() {
        assert_eq!(
            Cmdline::parse("workload=idle quiet"),
            Err(CmdlineError::NotKeyValue("quiet"))
        );
        assert_eq!(Cmdline::parse("=5"), Err(CmdlineError::EmptyKey("=5")));
        assert_eq!(Cmdline::parse("a=1 a=2"), Err(CmdlineError::Duplicate("a")));
        let many = "a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1 j=1 k=1 l=1 m=1 n=1 o=1 p=1";
        assert_eq!(Cmdline::parse(many).unwrap().params().count(), MAX_PARAMS);
        let too_many = "a=1 b=1 c=1 d=1 e=1 f=1 g=1 h=1 i=1 j=1 k=1 l=1 m=1 n=1 o=1 p=1 q=1";
        assert_eq!(Cmdline::parse(too_many), Err(CmdlineError::TooMany));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            CmdlineError::NotKeyValue("quiet").to_string(),
            "'quiet' is not a key=value parameter"
        );
    }
}
