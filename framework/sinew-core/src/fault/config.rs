use std::{fmt, str::FromStr, time::Duration};

use tonic::Code;

use crate::codes::{code_from_name, code_from_number, code_name};

use super::FaultParseError;

/// The faults to inject: rules tried in order, and the seed of the random
/// draws. See the [module docs](super) for the text form.
///
/// The default is empty: it injects nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultConfig {
    /// The rules, in the order they are tried.
    pub rules: Vec<FaultRule>,
    /// Seed of the probability draws; `None` seeds from the clock, so runs
    /// differ. Set it to make a run repeatable.
    pub seed: Option<u64>,
}

/// One rule: which calls, how likely, and what happens to them.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The calls the rule applies to.
    pub target: Target,
    /// The chance, from 0 to 1, that a matching call gets the action. The
    /// parser keeps it in range; set in code, anything at or above 1
    /// always applies and anything at or below 0 (or NaN) never does.
    pub probability: f64,
    /// What happens to a picked call.
    pub action: Action,
}

/// The calls a rule applies to, by their path (`/pkg.Service/Method`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every call. Written `*`.
    Any,
    /// Every method of one service, by its full name (`echo.v1.Echo`).
    /// Written `/echo.v1.Echo/`.
    Service(String),
    /// One method. Written `/echo.v1.Echo/Get`.
    Method {
        /// The service's full name, such as `echo.v1.Echo`.
        service: String,
        /// The method's name, such as `Get`.
        method: String,
    },
}

/// What happens to a call a rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wait this long, then call the inner service. Written
    /// `latency=100ms`.
    Latency(Duration),
    /// Answer at once with this code and the message `injected fault`,
    /// without calling the inner service. Written `error=UNAVAILABLE`.
    /// `Code::Ok` (which the parser refuses) answers an empty OK.
    Error(Code),
    /// Fail with no gRPC status: an `Err` whose cause is
    /// [`InjectedFault`](crate::fault::InjectedFault). Written `abort`.
    Abort,
}

// === impl FaultConfig ===

impl FaultConfig {
    /// Reads a config from its text form; see the [module docs](super) for
    /// the grammar. The error names the rule and the token at fault.
    pub fn parse(spec: &str) -> Result<Self, FaultParseError> {
        let mut config = Self::default();
        for (i, entry) in spec.split(';').enumerate() {
            let rule = i + 1;
            let mut tokens = entry.split_ascii_whitespace();
            let Some(first) = tokens.next() else {
                continue;
            };
            if let Some(seed) = first.strip_prefix("seed=") {
                if config.seed.is_some() {
                    return Err(FaultParseError::new(rule, first, "a second seed; give one"));
                }
                let seed = seed.parse().map_err(|_| {
                    FaultParseError::new(rule, first, "expected a whole number from 0 to 2^64-1")
                })?;
                if let Some(extra) = tokens.next() {
                    return Err(FaultParseError::new(
                        rule,
                        extra,
                        "a seed entry has nothing else; end it with `;`",
                    ));
                }
                config.seed = Some(seed);
                continue;
            }
            config
                .rules
                .push(FaultRule::parse(rule, first, tokens, entry.trim())?);
        }
        Ok(config)
    }

    /// Whether the config has no rules, so injects nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl FromStr for FaultConfig {
    type Err = FaultParseError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Self::parse(spec)
    }
}

/// The text form, which [`FaultConfig::parse`] reads back to an equal
/// config: rules joined by `; `, then the seed.
impl fmt::Display for FaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        for rule in &self.rules {
            write!(f, "{separator}{rule}")?;
            separator = "; ";
        }
        if let Some(seed) = self.seed {
            write!(f, "{separator}seed={seed}")?;
        }
        Ok(())
    }
}

// === impl FaultRule ===

impl FaultRule {
    /// Parses the rule numbered `rule`: its target token, then the rest.
    /// `text` is the whole rule, for errors about what it lacks.
    fn parse<'a>(
        rule: usize,
        target: &str,
        tokens: impl Iterator<Item = &'a str>,
        text: &str,
    ) -> Result<Self, FaultParseError> {
        let target =
            Target::parse(target).map_err(|reason| FaultParseError::new(rule, target, reason))?;
        let mut action = None;
        let mut probability = None;
        for token in tokens {
            let bad = |reason: String| FaultParseError::new(rule, token, reason);
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            let parsed = match (key, token.contains('=')) {
                ("abort", false) => Some(Action::Abort),
                ("latency", true) => Some(Action::Latency(parse_latency(value).map_err(bad)?)),
                ("error", true) => Some(Action::Error(parse_code(value).map_err(bad)?)),
                ("p", true) => {
                    if probability.is_some() {
                        return Err(bad("a second p=; a rule has one probability".to_owned()));
                    }
                    probability = Some(parse_probability(value).map_err(bad)?);
                    None
                }
                ("abort", true) => return Err(bad("abort takes no value".to_owned())),
                _ => {
                    return Err(bad(
                        "unknown token; expected latency=<duration>, error=<code>, abort or p=<probability>"
                            .to_owned(),
                    ));
                }
            };
            if let Some(parsed) = parsed {
                if action.is_some() {
                    return Err(bad("a second action; a rule has one".to_owned()));
                }
                action = Some(parsed);
            }
        }
        let action = action.ok_or_else(|| {
            FaultParseError::new(
                rule,
                text,
                "no action; expected latency=<duration>, error=<code> or abort",
            )
        })?;
        Ok(Self {
            target,
            probability: probability.unwrap_or(1.0),
            action,
        })
    }
}

/// `target action[ p=probability]`, with `p` left out when it is 1.
impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.target, self.action)?;
        if self.probability != 1.0 {
            // `f64`'s Display is the shortest text that parses back to the
            // same value, and never uses an exponent.
            write!(f, " p={}", self.probability)?;
        }
        Ok(())
    }
}

fn parse_latency(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("invalid duration: {e}; expected one like 100ms or 2s"))
}

fn parse_code(value: &str) -> Result<Code, String> {
    let code = match value.parse::<u64>() {
        Ok(number) => code_from_number(number),
        Err(_) => code_from_name(value),
    }
    .ok_or_else(|| {
        format!("unknown status code {value:?}; expected a name like UNAVAILABLE or a number from 1 to 16")
    })?;
    if code == Code::Ok {
        return Err("OK is not a fault; pick a failure code".to_owned());
    }
    Ok(code)
}

fn parse_probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "probability must be a decimal from 0 to 1, got {value:?}"
        )),
    }
}

// === impl Target ===

impl Target {
    /// A target from its text form: `*`, `/pkg.Service/` or
    /// `/pkg.Service/Method`.
    fn parse(text: &str) -> Result<Self, String> {
        const FORMS: &str = "`*`, `/pkg.Service/` or `/pkg.Service/Method`";
        if text == "*" {
            return Ok(Self::Any);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("expected a target first: {FORMS}"));
        };
        let Some((service, method)) = rest.split_once('/') else {
            return Err(format!(
                "a target ends in `/` for a whole service, or names a method: {FORMS}"
            ));
        };
        if service.is_empty() {
            return Err(format!("no service name; expected {FORMS}"));
        }
        if method.contains('/') {
            return Err(format!("too many `/`; expected {FORMS}"));
        }
        if text[1..].contains('*') {
            return Err(
                "no wildcards inside a path; `/pkg.Service/` is every method of a service, `*` every call"
                    .to_owned(),
            );
        }
        Ok(if method.is_empty() {
            Self::Service(service.to_owned())
        } else {
            Self::Method {
                service: service.to_owned(),
                method: method.to_owned(),
            }
        })
    }

    /// Whether the call at `path` (`/pkg.Service/Method`) is a target.
    pub fn matches(&self, path: &str) -> bool {
        let split = || path.strip_prefix('/')?.split_once('/');
        match self {
            Self::Any => true,
            Self::Service(service) => split().is_some_and(|(s, _)| s == service),
            Self::Method { service, method } => {
                split().is_some_and(|(s, m)| s == service && m == method)
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Service(service) => write!(f, "/{service}/"),
            Self::Method { service, method } => write!(f, "/{service}/{method}"),
        }
    }
}

// === impl Action ===

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latency(duration) => {
                // The largest unit that is exact, with no spaces (humantime's
                // own format writes "1s 500ms", which would split the token).
                let nanos = duration.as_nanos();
                let (per, unit) = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
                    .into_iter()
                    .find(|(per, _)| nanos % per == 0)
                    .unwrap_or((1, "ns"));
                write!(f, "latency={}{unit}", nanos / per)
            }
            Self::Error(code) => write!(f, "error={}", code_name(*code)),
            Self::Abort => f.write_str("abort"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(target: Target, action: Action, probability: f64) -> FaultRule {
        FaultRule {
            target,
            probability,
            action,
        }
    }

    fn service(name: &str) -> Target {
        Target::Service(name.to_owned())
    }

    fn method(service: &str, method: &str) -> Target {
        Target::Method {
            service: service.to_owned(),
            method: method.to_owned(),
        }
    }

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let spec = "/echo.v1.Echo/Get error=UNAVAILABLE p=0.3; /echo.v1.Echo/ latency=100ms p=0.5; * abort p=0.01; seed=42";
        let config = FaultConfig::parse(spec).unwrap();
        assert_eq!(
            config,
            FaultConfig {
                rules: vec![
                    rule(
                        method("echo.v1.Echo", "Get"),
                        Action::Error(Code::Unavailable),
                        0.3
                    ),
                    rule(
                        service("echo.v1.Echo"),
                        Action::Latency(Duration::from_millis(100)),
                        0.5
                    ),
                    rule(Target::Any, Action::Abort, 0.01),
                ],
                seed: Some(42),
            }
        );
        assert_eq!(config.to_string(), spec);
        assert_eq!(spec.parse::<FaultConfig>(), Ok(config));
    }

    #[test]
    fn other_documented_forms_round_trip() {
        let specs = [
            // p defaults to 1 and is then not written.
            ("* error=internal", "* error=INTERNAL"),
            ("/a.S/M latency=2s", "/a.S/M latency=2s"),
            ("/a.S/M latency=1m30s", "/a.S/M latency=90s"),
            ("/a.S/M latency=250us p=1", "/a.S/M latency=250us"),
            ("/a.S/M latency=1500ms", "/a.S/M latency=1500ms"),
            (
                "  /a.S/   p=0.25 error=14 ;;",
                "/a.S/ error=UNAVAILABLE p=0.25",
            ),
            ("seed=7; * abort", "* abort; seed=7"),
            ("", ""),
            ("seed=0", "seed=0"),
            ("* abort p=0", "* abort p=0"),
            ("* abort p=0.0000001", "* abort p=0.0000001"),
        ];
        for (spec, shown) in specs {
            let config = FaultConfig::parse(spec).expect(spec);
            assert_eq!(config.to_string(), shown, "{spec:?}");
            assert_eq!(FaultConfig::parse(shown), Ok(config), "{shown:?}");
        }
        assert!(FaultConfig::parse("").unwrap().is_empty());
    }

    #[test]
    fn odd_durations_display_exactly() {
        let config = FaultConfig {
            rules: vec![rule(
                Target::Any,
                Action::Latency(Duration::from_nanos(1_000_000_001)),
                1.0,
            )],
            seed: None,
        };
        assert_eq!(config.to_string(), "* latency=1000000001ns");
        assert_eq!(FaultConfig::parse(&config.to_string()), Ok(config));
    }

    #[test]
    fn parse_errors_name_the_rule_and_the_token() {
        let cases = [
            (
                "error=UNAVAILABLE",
                1,
                "error=UNAVAILABLE",
                "expected a target first",
            ),
            (
                "* abort; /echo.v1.Echo error=INTERNAL",
                2,
                "/echo.v1.Echo",
                "ends in `/`",
            ),
            ("//Get abort", 1, "//Get", "no service name"),
            ("/a.S/M/x abort", 1, "/a.S/M/x", "too many `/`"),
            ("/a.S/* abort", 1, "/a.S/*", "no wildcards"),
            (
                "* abort; /a.S/Get error=UNAVAILBLE p=0.3",
                2,
                "error=UNAVAILBLE",
                "unknown status code \"UNAVAILBLE\"",
            ),
            ("* error=17", 1, "error=17", "unknown status code \"17\""),
            ("* error=OK", 1, "error=OK", "OK is not a fault"),
            ("* error=0", 1, "error=0", "OK is not a fault"),
            ("* latency=100", 1, "latency=100", "invalid duration"),
            ("* latency=", 1, "latency=", "invalid duration"),
            ("* latency=fast", 1, "latency=fast", "invalid duration"),
            ("* abort p=1.5", 1, "p=1.5", "from 0 to 1, got \"1.5\""),
            ("* abort p=-0.1", 1, "p=-0.1", "from 0 to 1"),
            ("* abort p=NaN", 1, "p=NaN", "from 0 to 1"),
            ("* abort p=30%", 1, "p=30%", "from 0 to 1"),
            ("* abort p=0.1 p=0.2", 1, "p=0.2", "a second p="),
            (
                "* abort error=INTERNAL",
                1,
                "error=INTERNAL",
                "a second action",
            ),
            ("* abort=1", 1, "abort=1", "takes no value"),
            ("* delay=1s", 1, "delay=1s", "unknown token"),
            ("* Abort", 1, "Abort", "unknown token"),
            ("; ;* abort; /a.S/M p=0.5", 4, "/a.S/M p=0.5", "no action"),
            ("* abort; seed=x", 2, "seed=x", "whole number"),
            ("seed=1; * abort; seed=2", 3, "seed=2", "a second seed"),
            ("seed=1 * abort", 1, "*", "nothing else"),
        ];
        for (spec, number, token, reason) in cases {
            let err = FaultConfig::parse(spec).expect_err(spec);
            assert_eq!(err.rule(), number, "{spec:?}: {err}");
            assert_eq!(err.token(), token, "{spec:?}: {err}");
            assert!(err.reason().contains(reason), "{spec:?}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("fault rule {number}: {token:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn targets_match_by_path() {
        let get = method("echo.v1.Echo", "Get");
        let echo = service("echo.v1.Echo");
        assert!(get.matches("/echo.v1.Echo/Get"));
        assert!(!get.matches("/echo.v1.Echo/GetAll"));
        assert!(!get.matches("/echo.v1.Echo/Put"));
        assert!(!get.matches("/echo.v1.Other/Get"));
        assert!(echo.matches("/echo.v1.Echo/Get"));
        assert!(echo.matches("/echo.v1.Echo/Put"));
        assert!(!echo.matches("/echo.v1.EchoMore/Get"));
        assert!(!echo.matches("/echo.v1.Ech/Get"));
        assert!(!echo.matches("echo.v1.Echo/Get"));
        assert!(Target::Any.matches("/anything/At"));
        assert!(Target::Any.matches(""));
    }
}
