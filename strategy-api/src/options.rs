//! Plugin options: `nanohost run --plugin-option key=value` (or `plugin_options` in `--config`),
//! handed to [`KvStrategy::new`](crate::KvStrategy::new) as typed values.
//!
//! A strategy reads the ones it takes through [`Options`] with a default each; any option given
//! that it did not read is an error naming the option and the ones it does take, so a typo never
//! runs silently with the default.

use abi_stable::std_types::RString;
use abi_stable::StableAbi;
use std::cell::RefCell;

/// An option's value, typed by the host: on the command line an integer, a float, `true` or
/// `false` become those; anything else is text. In a JSON config, the JSON type decides.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub enum OptionValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(RString),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Int(v) => write!(f, "{v}"),
            OptionValue::Float(v) => write!(f, "{v}"),
            OptionValue::Bool(v) => write!(f, "{v}"),
            OptionValue::Text(v) => write!(f, "{v}"),
        }
    }
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PluginOption {
    pub key: RString,
    pub value: OptionValue,
}

/// The options given to one strategy, as it reads them.
pub struct Options<'a> {
    given: &'a [PluginOption],
    /// Each option read and the value the strategy got (given, or its default), in the order
    /// first read: what results record as the strategy's options.
    used: RefCell<Vec<PluginOption>>,
}

impl<'a> Options<'a> {
    pub fn new(given: &'a [PluginOption]) -> Self {
        Options {
            given,
            used: RefCell::new(Vec::new()),
        }
    }

    fn note(&self, key: &'static str, value: OptionValue) {
        let mut used = self.used.borrow_mut();
        match used.iter_mut().find(|o| o.key == key) {
            Some(o) => o.value = value,
            None => used.push(PluginOption {
                key: key.into(),
                value,
            }),
        }
    }

    /// Every option read so far with the value the strategy got.
    pub fn used(&self) -> Vec<PluginOption> {
        self.used.borrow().clone()
    }

    fn get(&self, key: &'static str) -> Option<&'a OptionValue> {
        self.given
            .iter()
            .rev()
            .find(|o| o.key == key)
            .map(|o| &o.value)
    }

    /// A non-negative integer option, `default` when not given.
    pub fn u32(&self, key: &'static str, default: u32) -> Result<u32, String> {
        let v = match self.get(key) {
            None => default,
            Some(OptionValue::Int(v)) => u32::try_from(*v).map_err(|_| {
                format!(
                    "option `{key}` must be an integer in 0..={}, got {v}",
                    u32::MAX
                )
            })?,
            Some(other) => return Err(format!("option `{key}` must be an integer, got `{other}`")),
        };
        self.note(key, OptionValue::Int(v.into()));
        Ok(v)
    }

    /// A number option (an integer is taken as a number), `default` when not given.
    pub fn f64(&self, key: &'static str, default: f64) -> Result<f64, String> {
        let v = match self.get(key) {
            None => default,
            Some(OptionValue::Int(v)) => *v as f64,
            Some(OptionValue::Float(v)) => *v,
            Some(other) => return Err(format!("option `{key}` must be a number, got `{other}`")),
        };
        self.note(key, OptionValue::Float(v));
        Ok(v)
    }

    /// A `true`/`false` option, `default` when not given.
    pub fn bool(&self, key: &'static str, default: bool) -> Result<bool, String> {
        let v = match self.get(key) {
            None => default,
            Some(OptionValue::Bool(v)) => *v,
            Some(other) => {
                return Err(format!(
                    "option `{key}` must be true or false, got `{other}`"
                ))
            }
        };
        self.note(key, OptionValue::Bool(v));
        Ok(v)
    }

    /// A text option (any value, as written), `default` when not given.
    pub fn text(&self, key: &'static str, default: &str) -> String {
        let v = self
            .get(key)
            .map_or_else(|| default.to_string(), |v| v.to_string());
        self.note(key, OptionValue::Text(v.as_str().into()));
        v
    }

    /// An error naming every option given that the strategy did not read. (A read that failed
    /// is not counted: `new` returned that error first.)
    pub fn check_all_read(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let asked: Vec<&str> = used.iter().map(|o| o.key.as_str()).collect();
        let unknown: Vec<&str> = self
            .given
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| !asked.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let takes = if asked.is_empty() {
            "it takes no options".to_string()
        } else {
            format!("it takes: {}", asked.join(", "))
        };
        Err(format!(
            "unknown option{} `{}`; {takes}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join("`, `")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(key: &str, value: OptionValue) -> PluginOption {
        PluginOption {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn typed_reads_defaults_and_unknown_keys() {
        let given = [
            opt("window", OptionValue::Int(64)),
            opt("ratio", OptionValue::Int(2)),
            opt("windw", OptionValue::Int(3)),
        ];
        let o = Options::new(&given);
        assert_eq!(o.u32("window", 1020), Ok(64));
        assert_eq!(o.u32("sinks", 4), Ok(4));
        assert_eq!(o.f64("ratio", 0.5), Ok(2.0));
        assert_eq!(
            o.check_all_read(),
            Err("unknown option `windw`; it takes: window, sinks, ratio".into())
        );
        let used: Vec<(String, OptionValue)> = o
            .used()
            .into_iter()
            .map(|o| (o.key.into_string(), o.value))
            .collect();
        assert_eq!(
            used,
            [
                ("window".into(), OptionValue::Int(64)),
                ("sinks".into(), OptionValue::Int(4)),
                ("ratio".into(), OptionValue::Float(2.0))
            ]
        );
        let bad = [opt("window", OptionValue::Text("big".into()))];
        assert_eq!(
            Options::new(&bad).u32("window", 1),
            Err("option `window` must be an integer, got `big`".into())
        );
        let neg = [opt("window", OptionValue::Int(-1))];
        assert!(Options::new(&neg)
            .u32("window", 1)
            .unwrap_err()
            .contains("0..="));
        assert_eq!(
            Options::new(&given[..1]).check_all_read(),
            Err("unknown option `window`; it takes no options".into())
        );
    }
}
