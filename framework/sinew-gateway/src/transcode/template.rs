//! `google.api.http` path templates: parsing and matching.
//!
//! ```text
//! Template  = "/" Segments [ Verb ] ;
//! Segments  = Segment { "/" Segment } ;
//! Segment   = "*" | "**" | LITERAL | Variable ;
//! Variable  = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb      = ":" LITERAL ;
//! ```
//!
//! A template is kept flat: its segments, plus for each variable the range
//! of segments it covers. `**` may only be the last segment, so matching is
//! a single pass with no backtracking.

use std::{cmp::Ordering, fmt::Write as _};

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matches exactly this text.
    Literal(Box<str>),
    /// `*`: any one non-empty segment.
    Single,
    /// `**`: the rest of the path, zero or more segments.
    Multi,
}

/// A `{field.path=...}` variable: which segments it captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    /// The field path as written, e.g. `book.name`.
    pub(crate) field_path: Box<str>,
    /// The first segment it covers.
    pub(crate) start: usize,
    /// One past the last segment it covers (a `**` there takes the rest).
    pub(crate) end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) segments: Vec<Segment>,
    pub(crate) variables: Vec<Variable>,
    pub(crate) verb: Option<Box<str>>,
}

/// What a parsed template matched: one value per variable, in order.
pub(crate) type Matched = Vec<String>;

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parser = Parser {
            text,
            pos: 0,
            template: Template {
                segments: Vec::new(),
                variables: Vec::new(),
                verb: None,
            },
        };
        parser.template()?;
        Ok(parser.template)
    }

    /// The template with variables replaced by what they match: two
    /// templates with the same shape match the same paths, so the same
    /// verb may not have both.
    pub(crate) fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Literal(text) => shape.push_str(text),
                Segment::Single => shape.push('*'),
                Segment::Multi => shape.push_str("**"),
            }
        }
        if let Some(verb) = &self.verb {
            let _ = write!(shape, ":{verb}");
        }
        shape
    }

    /// Orders templates most specific first: a verb suffix first, then
    /// segment by segment a literal before `*` before `**`, and a template
    /// that ends before one that goes on with `**`.
    pub(crate) fn specificity(&self, other: &Self) -> Ordering {
        fn rank(segment: Option<&Segment>) -> u8 {
            match segment {
                None => 3,
                Some(Segment::Literal(_)) => 2,
                Some(Segment::Single) => 1,
                Some(Segment::Multi) => 0,
            }
        }
        let verbs = other.verb.is_some().cmp(&self.verb.is_some());
        let longest = self.segments.len().max(other.segments.len());
        let segments = (0..=longest)
            .map(|i| rank(other.segments.get(i)).cmp(&rank(self.segments.get(i))))
            .find(|order| order.is_ne())
            .unwrap_or(Ordering::Equal);
        verbs.then(segments)
    }

    /// Matches a request path (no query string): `None` if it does not
    /// match or a captured value is not UTF-8 once percent-decoded.
    ///
    /// `segments` is scratch space reused between templates.
    pub(crate) fn matches<'p>(
        &self,
        path: &'p str,
        segments: &mut Vec<&'p str>,
    ) -> Option<Matched> {
        let mut rest = path.strip_prefix('/')?;
        if let Some(verb) = &self.verb {
            rest = rest.strip_suffix(&**verb)?.strip_suffix(':')?;
        }
        segments.clear();
        segments.extend(rest.split('/'));
        let fixed = match self.segments.last() {
            Some(Segment::Multi) => {
                if segments.len() < self.segments.len() - 1 {
                    return None;
                }
                self.segments.len() - 1
            }
            _ => {
                if segments.len() != self.segments.len() {
                    return None;
                }
                self.segments.len()
            }
        };
        for (pattern, segment) in self.segments[..fixed].iter().zip(segments.iter()) {
            let ok = match pattern {
                Segment::Literal(text) => literal_matches(text, segment),
                Segment::Single => !segment.is_empty(),
                Segment::Multi => false,
            };
            if !ok {
                return None;
            }
        }
        self.variables
            .iter()
            .map(|var| {
                let end = if var.end == self.segments.len() && fixed < self.segments.len() {
                    segments.len()
                } else {
                    var.end
                };
                let covered = &segments[var.start..end];
                let single = var.end - var.start == 1 && self.segments[var.start] != Segment::Multi;
                if single {
                    // A single segment: everything is decoded, `%2F` too.
                    percent_decode(covered[0], false)
                } else {
                    // Several segments: `/` stays the separator and `%2F`
                    // stays encoded so it can be told apart from it.
                    percent_decode(&covered.join("/"), true)
                }
            })
            .collect()
    }
}

/// A literal path segment matches itself, or its percent-encoded form.
fn literal_matches(literal: &str, segment: &str) -> bool {
    literal == segment
        || (segment.contains('%') && percent_decode(segment, false).as_deref() == Some(literal))
}

/// Decodes `%XX` escapes (an invalid escape is kept as it is); `None` if
/// the result is not UTF-8. With `keep_slash`, `%2F` stays encoded.
pub(crate) fn percent_decode(text: &str, keep_slash: bool) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)? << 4) | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(b'/') if keep_slash => {
                out.extend_from_slice(&bytes[i..i + 3]);
                i += 3;
            }
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// A recursive-descent parser over the template text.
struct Parser<'t> {
    text: &'t str,
    pos: usize,
    template: Template,
}

impl Parser<'_> {
    fn template(&mut self) -> Result<(), String> {
        if !self.eat('/') {
            return Err("must start with `/`".into());
        }
        self.segments(false)?;
        if self.eat(':') {
            self.template.verb = Some(self.literal()?.into());
        }
        if self.pos != self.text.len() {
            return Err(self.unexpected());
        }
        Ok(())
    }

    /// `Segment { "/" Segment }`; inside a variable, no nested variables.
    fn segments(&mut self, in_variable: bool) -> Result<(), String> {
        loop {
            if matches!(self.template.segments.last(), Some(Segment::Multi)) {
                return Err(format!("`**` must be the last segment (at {})", self.pos));
            }
            if self.eat_str("**") {
                self.template.segments.push(Segment::Multi);
            } else if self.eat('*') {
                self.template.segments.push(Segment::Single);
            } else if self.peek() == Some('{') {
                if in_variable {
                    return Err(format!("variables cannot nest (at {})", self.pos));
                }
                self.variable()?;
            } else {
                let literal = self.literal()?.into();
                self.template.segments.push(Segment::Literal(literal));
            }
            if !self.eat('/') {
                return Ok(());
            }
        }
    }

    /// `"{" FieldPath [ "=" Segments ] "}"`.
    fn variable(&mut self) -> Result<(), String> {
        self.eat('{');
        let begin = self.pos;
        let end = self.text[begin..]
            .find(['=', '}'])
            .map_or(self.text.len(), |i| begin + i);
        let field_path = &self.text[begin..end];
        let ident = |part: &str| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !field_path.split('.').all(ident) {
            return Err(format!("`{field_path}` is not a field path (at {begin})"));
        }
        if self
            .template
            .variables
            .iter()
            .any(|v| &*v.field_path == field_path)
        {
            return Err(format!("`{field_path}` is bound twice"));
        }
        self.pos = end;
        let start = self.template.segments.len();
        if self.eat('=') {
            self.segments(true)?;
        } else {
            self.template.segments.push(Segment::Single);
        }
        if !self.eat('}') {
            return Err(format!("unclosed variable `{field_path}`"));
        }
        self.template.variables.push(Variable {
            field_path: field_path.into(),
            start,
            end: self.template.segments.len(),
        });
        Ok(())
    }

    /// A non-empty run of characters other than the template's own.
    fn literal(&mut self) -> Result<&str, String> {
        let begin = self.pos;
        let len = self.text[begin..]
            .find(['/', '{', '}', '*', ':', '='])
            .unwrap_or(self.text.len() - begin);
        if len == 0 {
            return Err(self.unexpected());
        }
        self.pos += len;
        Ok(&self.text[begin..self.pos])
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += c.len_utf8();
        }
        found
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let found = self.text[self.pos..].starts_with(s);
        if found {
            self.pos += s.len();
        }
        found
    }

    fn unexpected(&self) -> String {
        match self.peek() {
            Some(c) => format!("unexpected `{c}` at {}", self.pos),
            None => "unexpected end".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(template: &str, path: &str) -> Option<Vec<String>> {
        Template::parse(template)
            .unwrap()
            .matches(path, &mut Vec::new())
    }

    #[test]
    fn parses_the_grammar() {
        let t = Template::parse("/v1/{name=shelves/*/books/**}:read").unwrap();
        assert_eq!(t.shape(), "/v1/shelves/*/books/**:read");
        assert_eq!(t.variables.len(), 1);
        assert_eq!((t.variables[0].start, t.variables[0].end), (1, 5));
        assert_eq!(Template::parse("/a/{b.c}/*").unwrap().shape(), "/a/*/*");
    }

    #[test]
    fn rejects_bad_templates() {
        for (bad, why) in [
            ("v1/a", "must start"),
            ("/v1//a", "unexpected `/`"),
            ("/v1/**/a", "last segment"),
            ("/v1/{a=b/{c}}", "cannot nest"),
            ("/v1/{a", "unclosed"),
            ("/v1/{1a}", "not a field path"),
            ("/v1/{a}/{a}", "bound twice"),
            ("/v1/a:", "unexpected end"),
            ("/v1/a}", "unexpected `}`"),
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn matches_and_decodes() {
        assert_eq!(capture("/v1/{a}/x", "/v1/b%20c/x").unwrap(), ["b c"]);
        // One segment: %2F decodes to `/`.
        assert_eq!(capture("/v1/{a}", "/v1/a%2Fb").unwrap(), ["a/b"]);
        // Several: `/` separates, %2F stays.
        assert_eq!(
            capture("/v1/{p=**}", "/v1/a/b%2Fc/%C3%A9").unwrap(),
            ["a/b%2Fc/é"]
        );
        assert_eq!(capture("/v1/{p=**}", "/v1").unwrap(), [""]);
        assert_eq!(capture("/v1/{n=s/*}:go", "/v1/s/x:go").unwrap(), ["s/x"]);
        assert!(capture("/v1/{n=s/*}:go", "/v1/s/x").is_none());
        assert!(capture("/v1/{a}", "/v1/").is_none());
        assert!(capture("/v1/{a}", "/v1/%FF").is_none());
        assert!(capture("/v1/a", "/v1/a/b").is_none());
        assert_eq!(capture("/v%31/{a}", "/v%31/z").unwrap(), ["z"]);
    }

    #[test]
    fn orders_by_specificity() {
        let mut templates: Vec<_> = ["/a/**", "/a/*", "/a/b", "/a/*:v", "/a", "/*/b"]
            .into_iter()
            .map(|t| Template::parse(t).unwrap())
            .collect();
        templates.sort_by(Template::specificity);
        let shapes: Vec<_> = templates.iter().map(Template::shape).collect();
        assert_eq!(shapes, ["/a/*:v", "/a", "/a/b", "/a/*", "/a/**", "/*/b"]);
    }
}
