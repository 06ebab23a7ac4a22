//! Command-line options shared by the xtask commands: `--flag value` or `--flag=value`.

use std::str::FromStr;

/// The most processors `--cpus` accepts (mini-hv's per-CPU tables; Bochs allows more).
pub const MAX_CPUS: u32 = 8;

/// Walks a command's arguments one option at a time.
pub struct Options<'a> {
    rest: std::slice::Iter<'a, String>,
    flag: &'a str,
    inline: Option<&'a str>,
}

impl<'a> Options<'a> {
    /// Options from `args` (the command's name already removed).
    pub fn new(args: &'a [String]) -> Self {
        Options {
            rest: args.iter(),
            flag: "",
            inline: None,
        }
    }

    /// The next option's flag (`--timeout` of `--timeout=9` too), or `None` at the end.
    pub fn next_flag(&mut self) -> Option<&'a str> {
        let arg = self.rest.next()?;
        (self.flag, self.inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        };
        Some(self.flag)
    }

    /// Whether the current option carried its value after `=`.
    pub fn has_inline_value(&self) -> bool {
        self.inline.is_some()
    }

    /// The current option's value: after its `=`, else the next argument.
    pub fn value(&mut self) -> Result<String, String> {
        match self.inline.take() {
            Some(value) => Ok(value.to_string()),
            None => self
                .rest
                .next()
                .cloned()
                .ok_or(format!("{} needs a value", self.flag)),
        }
    }

    /// The current option's value as a number; the error says the option takes `what` (e.g. `seconds`).
    pub fn number<T: FromStr>(&mut self, what: &str) -> Result<T, String> {
        let value = self.value()?;
        value
            .parse()
            .map_err(|_| format!("{} takes {what}, not {value:?}", self.flag))
    }

    /// The current option's value as a processor count: 1 to [`MAX_CPUS`].
    pub fn cpus(&mut self) -> Result<u32, String> {
        let cpus: u32 = self.number("a processor count")?;
        if !(1..=MAX_CPUS).contains(&cpus) {
            return Err(format!(
                "{} {cpus}: between 1 and {MAX_CPUS} processors (mini-hv starts at most {MAX_CPUS})",
                self.flag
            ));
        }
        Ok(cpus)
    }

    /// The current option's value as a platform: `bochs` or `qemu`.
    pub fn platform(&mut self) -> Result<String, String> {
        let value = self.value()?;
        if value != "bochs" && value != "qemu" {
            return Err(format!("--platform must be bochs or qemu, not {value:?}"));
        }
        Ok(value)
    }
}

/// Owned arguments for the parsers' tests.
#[cfg(test)]
pub fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_inline_or_next() {
        let args = owned(&["--a=1", "--b", "2", "-x=3", "--c"]);
        let mut o = Options::new(&args);
        assert_eq!(o.next_flag(), Some("--a"));
        assert!(o.has_inline_value());
        assert_eq!(o.number::<u32>("a number"), Ok(1));
        assert_eq!(o.next_flag(), Some("--b"));
        assert!(!o.has_inline_value());
        assert_eq!(o.value().as_deref(), Ok("2"));
        // Only `--` flags split at `=`.
        assert_eq!(o.next_flag(), Some("-x=3"));
        assert_eq!(o.next_flag(), Some("--c"));
        assert_eq!(o.value(), Err("--c needs a value".to_string()));
        assert_eq!(o.next_flag(), None);
    }

    #[test]
    fn bad_numbers_and_platforms_say_why() {
        let args = owned(&["--timeout", "soon", "--platform=vbox"]);
        let mut o = Options::new(&args);
        o.next_flag();
        assert_eq!(
            o.number::<u64>("seconds"),
            Err("--timeout takes seconds, not \"soon\"".to_string())
        );
        o.next_flag();
        assert_eq!(
            o.platform(),
            Err("--platform must be bochs or qemu, not \"vbox\"".to_string())
        );
    }
}
