//! Event settings from configuration: the `[events]` table of the
//! service's TOML settings file (the file `SINEW_CONFIG` names, which the
//! scaffold reads too), and `SINEW_NATS_URL` from the environment, over
//! the defaults. Code can still change anything afterwards.
//!
//! ```toml
//! [events]
//! url = "nats://nats.internal:4222"
//! request_timeout = "5s"
//!
//! [[events.streams]]
//! name = "SHOP"
//! subjects = ["shop.>"]
//! storage = "file"          # or "memory"
//! replicas = 3
//! duplicate_window = "2m"
//! max_age = "7days"
//! max_bytes = 1073741824
//!
//! [events.consumers.shipping]
//! ack_wait = "30s"
//! max_deliver = 5
//! backoff = ["1s", "5s", "30s"]
//! max_ack_pending = 64
//! ```
//!
//! Every key is optional but a stream's `name` and `subjects`; an unknown
//! key, or a value that does not parse, fails naming the key and the line.
//!
//! ```
//! let settings = sinew_events::EventsConfig::from_toml(
//!     "[events]\nurl = \"nats://nats:4222\"\n[events.consumers.shipping]\nmax_deliver = 9\n",
//!     "service.toml",
//! )
//! .unwrap();
//! assert_eq!(settings.jetstream.url, "nats://nats:4222");
//! assert_eq!(settings.consumer("shipping").max_deliver, 9);
//! assert_eq!(settings.consumer("billing").max_deliver, 5);
//! ```

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{ConsumerConfig, Error, JetStreamConfig, Storage, StreamConfig};

/// The environment variable naming the settings file.
pub const CONFIG_FILE_ENV: &str = "SINEW_CONFIG";
/// The environment variable that overrides `[events] url`.
pub const NATS_URL_ENV: &str = "SINEW_NATS_URL";
/// The server URL when nothing names one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The event settings of a service.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// The broker and its streams.
    pub jetstream: JetStreamConfig,
    /// Consumer settings by group name.
    pub consumers: BTreeMap<String, ConsumerConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            jetstream: JetStreamConfig::new(DEFAULT_URL),
            consumers: BTreeMap::new(),
        }
    }
}

impl EventsConfig {
    /// The settings from the file `SINEW_CONFIG` names (if any), then
    /// `SINEW_NATS_URL`, over the defaults.
    pub fn load() -> Result<Self, Error> {
        Self::load_with_env(|key| std::env::var(key).ok())
    }

    /// [`load`](Self::load), reading the environment through `env`.
    pub fn load_with_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut config = match env(CONFIG_FILE_ENV) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::Settings {
                    origin: path.clone(),
                    reason: e.to_string(),
                })?;
                Self::from_toml(&text, &path)?
            }
            None => Self::default(),
        };
        if let Some(url) = env(NATS_URL_ENV) {
            config.jetstream.url = url;
        }
        Ok(config)
    }

    /// The settings in the `[events]` table of a TOML document (other
    /// tables are the scaffold's business); `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, Error> {
        let file: File = toml::from_str(text).map_err(|e| Error::Settings {
            origin: origin.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        let Some(events) = file.events else {
            return Ok(Self::default());
        };
        let mut jetstream =
            JetStreamConfig::new(events.url.unwrap_or_else(|| DEFAULT_URL.to_owned()));
        if let Some(timeout) = events.connect_timeout {
            jetstream.connect_timeout = timeout.0;
        }
        if let Some(timeout) = events.request_timeout {
            jetstream.request_timeout = timeout.0;
        }
        if let Some(limit) = events.max_publishes_in_flight {
            jetstream.max_publishes_in_flight = limit;
        }
        for stream in events.streams {
            let mut config = StreamConfig::new(stream.name, stream.subjects);
            if let Some(storage) = stream.storage {
                config.storage = storage.into();
            }
            if let Some(replicas) = stream.replicas {
                config.replicas = replicas;
            }
            if let Some(window) = stream.duplicate_window {
                config.duplicate_window = window.0;
            }
            if let Some(age) = stream.max_age {
                config.max_age = age.0;
            }
            if let Some(bytes) = stream.max_bytes {
                config.max_bytes = bytes;
            }
            jetstream.streams.push(config);
        }
        let mut consumers = BTreeMap::new();
        for (group, settings) in events.consumers {
            let mut config = ConsumerConfig::new(group.clone());
            if let Some(wait) = settings.ack_wait {
                config.ack_wait = wait.0;
            }
            if let Some(deliveries) = settings.max_deliver {
                config.max_deliver = deliveries;
            }
            if let Some(backoff) = settings.backoff {
                config.backoff = backoff.into_iter().map(|d| d.0).collect();
            }
            if let Some(pending) = settings.max_ack_pending {
                config.max_ack_pending = pending;
            }
            config.validate()?;
            consumers.insert(group, config);
        }
        Ok(Self {
            jetstream,
            consumers,
        })
    }

    /// The settings of consumer group `group`: as configured, or the
    /// defaults.
    pub fn consumer(&self, group: &str) -> ConsumerConfig {
        self.consumers
            .get(group)
            .cloned()
            .unwrap_or_else(|| ConsumerConfig::new(group))
    }
}

#[derive(Deserialize)]
struct File {
    events: Option<Events>,
    #[serde(flatten)]
    _rest: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Events {
    url: Option<String>,
    connect_timeout: Option<Humantime>,
    request_timeout: Option<Humantime>,
    max_publishes_in_flight: Option<usize>,
    #[serde(default)]
    streams: Vec<Stream>,
    #[serde(default)]
    consumers: BTreeMap<String, Consumer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stream {
    name: String,
    subjects: Vec<String>,
    storage: Option<StorageName>,
    replicas: Option<usize>,
    duplicate_window: Option<Humantime>,
    max_age: Option<Humantime>,
    max_bytes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum StorageName {
    File,
    Memory,
}

impl From<StorageName> for Storage {
    fn from(name: StorageName) -> Self {
        match name {
            StorageName::File => Self::File,
            StorageName::Memory => Self::Memory,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Consumer {
    ack_wait: Option<Humantime>,
    max_deliver: Option<u32>,
    backoff: Option<Vec<Humantime>>,
    max_ack_pending: Option<u32>,
}

/// A duration written as `"250ms"`, `"5s"`, `"1m 30s"`.
struct Humantime(Duration);

impl<'de> Deserialize<'de> for Humantime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
addr = "0.0.0.0:50051"

[events]
url = "nats://nats:4222"
request_timeout = "2s"

[[events.streams]]
name = "SHOP"
subjects = ["shop.>"]
storage = "memory"
replicas = 3
duplicate_window = "5m"
max_age = "1day"
max_bytes = 1000

[events.consumers.shipping]
ack_wait = "10s"
max_deliver = 7
backoff = ["100ms", "2s"]
max_ack_pending = 8
"#;

    #[test]
    fn every_key_is_read() {
        let config = EventsConfig::from_toml(FULL, "service.toml").unwrap();
        let js = &config.jetstream;
        assert_eq!(js.url, "nats://nats:4222");
        assert_eq!(js.request_timeout, Duration::from_secs(2));
        let stream = &js.streams[0];
        assert_eq!(stream.name, "SHOP");
        assert_eq!(stream.subjects, ["shop.>"]);
        assert_eq!(stream.storage, Storage::Memory);
        assert_eq!(stream.replicas, 3);
        assert_eq!(stream.duplicate_window, Duration::from_secs(300));
        assert_eq!(stream.max_age, Duration::from_secs(86_400));
        assert_eq!(stream.max_bytes, 1000);
        let shipping = config.consumer("shipping");
        assert_eq!(shipping.ack_wait, Duration::from_secs(10));
        assert_eq!(shipping.max_deliver, 7);
        assert_eq!(
            shipping.backoff,
            [Duration::from_millis(100), Duration::from_secs(2)]
        );
        assert_eq!(shipping.max_ack_pending, 8);
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let unknown = EventsConfig::from_toml("[events]\nurll = \"x\"\n", "s.toml").unwrap_err();
        let text = unknown.to_string();
        assert!(
            text.contains("s.toml") && text.contains("line 2") && text.contains("urll"),
            "{text}"
        );

        let bad = EventsConfig::from_toml(
            "[events.consumers.shipping]\nack_wait = \"soon\"\n",
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("line 2") && bad.contains("\"soon\" is not a duration"),
            "{bad}"
        );

        let invalid =
            EventsConfig::from_toml("[events.consumers.shipping]\nmax_deliver = 0\n", "s.toml")
                .unwrap_err();
        assert!(
            matches!(
                invalid,
                Error::Config {
                    key: "consumer.max_deliver",
                    ..
                }
            ),
            "{invalid:?}"
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.toml");
        std::fs::write(&path, FULL).unwrap();
        let path = path.display().to_string();
        let config = EventsConfig::load_with_env(|key| match key {
            CONFIG_FILE_ENV => Some(path.clone()),
            NATS_URL_ENV => Some("nats://elsewhere:4222".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.jetstream.url, "nats://elsewhere:4222");
        assert_eq!(config.jetstream.streams.len(), 1);
        let none = EventsConfig::load_with_env(|_| None).unwrap();
        assert_eq!(none.jetstream.url, DEFAULT_URL);
    }
}
