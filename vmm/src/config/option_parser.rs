// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Cloud Hypervisor's option-list syntax: `key=value,key2=value2,flag`,
//! where a value may hold commas inside `[...]` or `"..."`, sizes take a
//! `K`, `M` or `G` suffix, and toggles are `on|off|true|false`.

use std::collections::BTreeMap;

use thiserror::Error;

/// A malformed option list.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionParserError {
    /// A key that the option does not have.
    #[error("unknown option: {0}")]
    UnknownOption(String),
    /// A key given twice.
    #[error("option given twice: {0}")]
    Duplicate(String),
    /// Unbalanced brackets or quotes, or an empty key.
    #[error("invalid syntax: {0}")]
    InvalidSyntax(String),
    /// A value that does not parse.
    #[error("invalid value for {key}: {value:?} ({reason})")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
}

/// The parsed `key[=value]` items of one option list.
#[derive(Debug, Default)]
pub struct OptionParser {
    items: BTreeMap<String, Option<String>>,
}

fn split_items(input: &str) -> Result<Vec<&str>, OptionParserError> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut start = 0;
    for (index, c) in input.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    OptionParserError::InvalidSyntax(format!("unbalanced ']' in {input:?}"))
                })?;
            }
            ',' if !quoted && depth == 0 => {
                items.push(&input[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if quoted || depth != 0 {
        return Err(OptionParserError::InvalidSyntax(format!(
            "unbalanced brackets or quotes in {input:?}"
        )));
    }
    items.push(&input[start..]);
    Ok(items)
}

impl OptionParser {
    /// Parses `input`, accepting only the keys in `known`. An empty item
    /// (as in `a=1,,b=2` or an empty input) is skipped.
    pub fn parse(input: &str, known: &[&str]) -> Result<Self, OptionParserError> {
        let mut items = BTreeMap::new();
        for item in split_items(input)? {
            if item.is_empty() {
                continue;
            }
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key, Some(value.trim_matches('"').to_string())),
                None => (item, None),
            };
            if key.is_empty() {
                return Err(OptionParserError::InvalidSyntax(format!(
                    "missing key in {item:?}"
                )));
            }
            if !known.contains(&key) {
                return Err(OptionParserError::UnknownOption(key.to_string()));
            }
            if items.insert(key.to_string(), value).is_some() {
                return Err(OptionParserError::Duplicate(key.to_string()));
            }
        }
        Ok(OptionParser { items })
    }

    /// Whether `key` was given, with or without a value.
    pub fn is_set(&self, key: &str) -> bool {
        self.items.contains_key(key)
    }

    /// The value of `key`; `None` if absent or given without `=`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items.get(key).and_then(|value| value.as_deref())
    }

    /// The keys given, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.items.keys().map(String::as_str)
    }

    /// The value of `key` as a toggle, if given.
    pub fn toggle(&self, key: &str) -> Result<Option<bool>, OptionParserError> {
        self.get(key)
            .map(|value| parse_toggle(key, value))
            .transpose()
    }

    /// The value of `key` as a size in bytes, if given.
    pub fn byte_size(&self, key: &str) -> Result<Option<u64>, OptionParserError> {
        self.get(key)
            .map(|value| parse_byte_size(key, value))
            .transpose()
    }

    /// The value of `key` as an integer, if given.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, OptionParserError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|value| {
                value
                    .trim()
                    .parse::<T>()
                    .map_err(|e| OptionParserError::InvalidValue {
                        key: key.to_string(),
                        value: value.to_string(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }
}

/// Parses `on|off|true|false` (an empty value is `off`, as upstream).
pub fn parse_toggle(key: &str, value: &str) -> Result<bool, OptionParserError> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" | "" => Ok(false),
        _ => Err(OptionParserError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: "expected on or off".to_string(),
        }),
    }
}

/// Parses a size in bytes with an optional `K`, `M` or `G` suffix
/// (powers of 1024), as Cloud Hypervisor's `ByteSized`.
pub fn parse_byte_size(key: &str, value: &str) -> Result<u64, OptionParserError> {
    let invalid = |reason: &str| OptionParserError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let text = value.trim();
    let (digits, multiplier) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 1u64 << 10),
        Some(b'M') => (&text[..text.len() - 1], 1 << 20),
        Some(b'G') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| invalid("expected a number of bytes, optionally with a K, M or G suffix"))?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| invalid("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_flags() {
        let parser = OptionParser::parse("size=128M,shared=on,tty", &["size", "shared", "tty"])
            .expect("parses");
        assert_eq!(parser.get("size"), Some("128M"));
        assert!(parser.is_set("tty"));
        assert_eq!(parser.get("tty"), None);
        assert_eq!(parser.toggle("shared"), Ok(Some(true)));
        assert_eq!(parser.byte_size("size"), Ok(Some(128 << 20)));
        assert_eq!(parser.byte_size("absent"), Ok(None));
        assert_eq!(parser.keys().collect::<Vec<_>>(), ["shared", "size", "tty"]);
    }

    #[test]
    fn brackets_and_quotes_keep_commas() {
        let parser = OptionParser::parse(
            r#"affinity=[0@[0,2],1@[1,3]],file="/a,b",boot=1"#,
            &["affinity", "file", "boot"],
        )
        .expect("parses");
        assert_eq!(parser.get("affinity"), Some("[0@[0,2],1@[1,3]]"));
        assert_eq!(parser.get("file"), Some("/a,b"));
        assert_eq!(parser.number::<u32>("boot"), Ok(Some(1)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            OptionParser::parse("bogus=1", &["size"]).map(|_| ()),
            Err(OptionParserError::UnknownOption("bogus".into()))
        );
        assert_eq!(
            OptionParser::parse("size=1,size=2", &["size"]).map(|_| ()),
            Err(OptionParserError::Duplicate("size".into()))
        );
        assert!(matches!(
            OptionParser::parse("a=[1,2", &["a"]),
            Err(OptionParserError::InvalidSyntax(_))
        ));
        assert!(matches!(
            OptionParser::parse("a=1]", &["a"]),
            Err(OptionParserError::InvalidSyntax(_))
        ));
        assert!(matches!(
            OptionParser::parse("=1", &["a"]),
            Err(OptionParserError::InvalidSyntax(_))
        ));
        let parser = OptionParser::parse("boot=x,t=maybe", &["boot", "t"]).expect("parses");
        assert!(parser.number::<u32>("boot").is_err());
        assert!(parser.toggle("t").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("s", "4096"), Ok(4096));
        assert_eq!(parse_byte_size("s", "4K"), Ok(4096));
        assert_eq!(parse_byte_size("s", "2M"), Ok(2 << 20));
        assert_eq!(parse_byte_size("s", "1G"), Ok(1 << 30));
        assert!(parse_byte_size("s", "1T").is_err());
        assert!(parse_byte_size("s", "1m").is_err());
        assert!(parse_byte_size("s", "M").is_err());
        assert!(parse_byte_size("s", "-1M").is_err());
        assert!(parse_byte_size("s", "99999999999999G").is_err());
    }

    #[test]
    fn toggles() {
        for (text, value) in [
            ("on", true),
            ("true", true),
            ("off", false),
            ("false", false),
        ] {
            assert_eq!(parse_toggle("k", text), Ok(value));
        }
        assert!(parse_toggle("k", "yes").is_err());
    }
}
