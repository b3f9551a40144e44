//! Static API keys, for internal tools.

use std::path::Path;

use subtle::ConstantTimeEq as _;

use super::{AuthError, AuthFuture, Authenticator, Credentials, Principal, Source};

/// The shortest key accepted in a keys file: 16 characters (a guessable key
/// is no key).
pub const MIN_KEY_LEN: usize = 16;

/// The header a key is sent in, unless another is set.
pub const DEFAULT_HEADER: &str = "x-api-key";

/// A keys file could not be used. Names the entry, never a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeysError {
    /// The file could not be read.
    #[error("cannot read the API keys file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An entry is invalid.
    #[error("invalid API keys entry {entry}: {reason}")]
    Entry {
        /// The entry's name, or its index.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

struct Entry {
    name: String,
    /// SHA-256 of the key: the key itself is not kept.
    digest: [u8; 32],
    scopes: Vec<String>,
}

/// Static API keys from a TOML file, each with a name (the principal's
/// subject) and scopes; a call carries its key in `x-api-key` (or the
/// header set with [`header`](Self::header)).
///
/// ```toml
/// [[keys]]
/// name = "ops-cli"
/// # the key itself, or its SHA-256 in hex as `sha256 = "..."`
/// key = "a-long-random-string-from-your-secret-store"
/// scopes = ["payments.refund"]
/// ```
///
/// Keys are kept as SHA-256 digests, and a presented key's digest is
/// compared with every entry's in constant time, so neither timing nor a
/// memory dump gives a key away. A call without the header is not its
/// (`Ok(None)`); one with an unknown key is refused.
pub struct ApiKeys {
    entries: Vec<Entry>,
    header: http::HeaderName,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field(
                "names",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .field("header", &self.header)
            .finish()
    }
}

// === impl ApiKeys ===

impl ApiKeys {
    /// The keys of the TOML file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ApiKeysError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ApiKeysError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// The keys of `text`, a TOML document as [`ApiKeys`] shows.
    pub fn from_toml(text: &str) -> Result<Self, ApiKeysError> {
        let entry_error = |entry: String, reason: &str| ApiKeysError::Entry {
            entry,
            reason: reason.to_owned(),
        };
        // A parse error's message may quote the line (and the key): it is
        // not repeated.
        let table: toml::Table = text
            .parse()
            .map_err(|_| entry_error("(file)".to_owned(), "not a TOML document"))?;
        let keys = match table.get("keys") {
            Some(toml::Value::Array(keys)) => keys,
            _ => return Err(entry_error("(file)".to_owned(), "no [[keys]] entries")),
        };
        let mut entries = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let key = key
                .as_table()
                .ok_or_else(|| entry_error(index.to_string(), "not a table"))?;
            let name = key
                .get("name")
                .and_then(toml::Value::as_str)
                .filter(|name| !name.is_empty())
                .ok_or_else(|| entry_error(index.to_string(), "no name"))?
                .to_owned();
            let digest = match (key.get("key"), key.get("sha256")) {
                (Some(toml::Value::String(secret)), None) => {
                    if secret.chars().count() < MIN_KEY_LEN {
                        return Err(entry_error(name, "the key is shorter than 16 characters"));
                    }
                    sha256(secret.as_bytes())
                }
                (None, Some(toml::Value::String(hex))) => parse_hex(hex)
                    .ok_or_else(|| entry_error(name.clone(), "sha256 is not 64 hex digits"))?,
                _ => return Err(entry_error(name, "needs exactly one of key or sha256")),
            };
            let scopes = match key.get("scopes") {
                None => Vec::new(),
                Some(toml::Value::Array(scopes)) => scopes
                    .iter()
                    .map(|scope| scope.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| entry_error(name.clone(), "scopes are not strings"))?,
                Some(_) => return Err(entry_error(name, "scopes is not a list")),
            };
            if entries
                .iter()
                .any(|e: &Entry| e.name == name || e.digest == digest)
            {
                return Err(entry_error(name, "a name or key is listed twice"));
            }
            entries.push(Entry {
                name,
                digest,
                scopes,
            });
        }
        Ok(Self {
            entries,
            header: http::HeaderName::from_static(DEFAULT_HEADER),
        })
    }

    /// Reads keys from this header instead of `x-api-key`.
    pub fn header(mut self, header: http::HeaderName) -> Self {
        self.header = header;
        self
    }

    /// The entry whose key is `presented`, compared with every entry.
    fn find(&self, presented: &[u8]) -> Option<&Entry> {
        let digest = sha256(presented);
        let mut found = None;
        for entry in &self.entries {
            // Every entry is compared, whichever matches.
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }
}

impl Authenticator for ApiKeys {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> AuthFuture<'a> {
        let result = match credentials.headers.get(&self.header) {
            None => Ok(None),
            Some(presented) => match self.find(presented.as_bytes()) {
                Some(entry) => Ok(Some(
                    Principal::new(entry.name.clone(), Source::ApiKey)
                        .with_scopes(entry.scopes.iter().cloned()),
                )),
                None => Err(AuthError::Invalid("unknown API key".to_owned())),
            },
        };
        Box::pin(std::future::ready(result))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}
