//! Tuning knobs: environment variables read once per process, for A/B runs on a new card (the
//! README's table lists them). A value that does not parse, or is not one the knob takes, is
//! reported with the variable's name and the values it takes, and the default is used: a typo
//! must not pass silently for a measured variant.

use std::str::FromStr;
use std::sync::OnceLock;

/// The value of `name` (cached in `cell`): `default` when unset; when set, a value that parses
/// and that `valid` accepts, else `default` after a warning naming `takes`.
pub fn knob<T: Copy + FromStr + Send + Sync>(
    cell: &'static OnceLock<T>,
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
    takes: &str,
) -> T {
    *cell.get_or_init(|| match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<T>() {
            Ok(x) if valid(&x) => x,
            _ => {
                tracing::warn!("{name}={v:?} is not {takes}; using the default");
                default
            }
        },
    })
}

/// An on/off knob: `1` on, `0` off.
pub fn switch(cell: &'static OnceLock<bool>, name: &str, default: bool) -> bool {
    *cell.get_or_init(|| match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim() {
            "1" => true,
            "0" => false,
            _ => {
                tracing::warn!("{name}={v:?} is not 0 or 1; using the default");
                default
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case its own variable, so that tests running at once do not see each other's.
    fn with_env(name: &str, value: Option<&str>) {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }

    #[test]
    fn a_knob_takes_valid_values_and_falls_back_on_the_rest() {
        let split = |v: &usize| [1, 2, 4, 8].contains(v);
        static UNSET: OnceLock<usize> = OnceLock::new();
        with_env("NANOHOST_TEST_KNOB_UNSET", None);
        assert_eq!(
            knob(&UNSET, "NANOHOST_TEST_KNOB_UNSET", 8, split, "1, 2, 4 or 8"),
            8
        );
        static SET: OnceLock<usize> = OnceLock::new();
        with_env("NANOHOST_TEST_KNOB_SET", Some(" 2 "));
        assert_eq!(
            knob(&SET, "NANOHOST_TEST_KNOB_SET", 8, split, "1, 2, 4 or 8"),
            2
        );
        static NOT_ALLOWED: OnceLock<usize> = OnceLock::new();
        with_env("NANOHOST_TEST_KNOB_NOT_ALLOWED", Some("3"));
        assert_eq!(
            knob(
                &NOT_ALLOWED,
                "NANOHOST_TEST_KNOB_NOT_ALLOWED",
                8,
                split,
                "1, 2, 4 or 8"
            ),
            8
        );
        static GARBAGE: OnceLock<usize> = OnceLock::new();
        with_env("NANOHOST_TEST_KNOB_GARBAGE", Some("two"));
        assert_eq!(
            knob(
                &GARBAGE,
                "NANOHOST_TEST_KNOB_GARBAGE",
                8,
                split,
                "1, 2, 4 or 8"
            ),
            8
        );
        // Read once: a later change is not seen.
        with_env("NANOHOST_TEST_KNOB_SET", Some("4"));
        assert_eq!(
            knob(&SET, "NANOHOST_TEST_KNOB_SET", 8, split, "1, 2, 4 or 8"),
            2
        );
    }

    #[test]
    fn a_switch_is_0_or_1() {
        static ON: OnceLock<bool> = OnceLock::new();
        with_env("NANOHOST_TEST_SWITCH_ON", Some("1"));
        assert!(switch(&ON, "NANOHOST_TEST_SWITCH_ON", false));
        static OFF: OnceLock<bool> = OnceLock::new();
        with_env("NANOHOST_TEST_SWITCH_OFF", Some("0"));
        assert!(!switch(&OFF, "NANOHOST_TEST_SWITCH_OFF", true));
        static OTHER: OnceLock<bool> = OnceLock::new();
        with_env("NANOHOST_TEST_SWITCH_OTHER", Some("yes"));
        assert!(switch(&OTHER, "NANOHOST_TEST_SWITCH_OTHER", true));
        static UNSET: OnceLock<bool> = OnceLock::new();
        with_env("NANOHOST_TEST_SWITCH_UNSET", None);
        assert!(!switch(&UNSET, "NANOHOST_TEST_SWITCH_UNSET", false));
    }
}
