//! The production broker: NATS JetStream.
//!
//! [`JetStream::connect`] connects, then creates (or updates) the streams
//! its configuration names and the dead-letter stream, so that a service
//! starts against an empty server. Each consumer group is a durable pull
//! consumer, shared by the group's replicas.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind, Context,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::{self, DiscardPolicy, StorageType},
    },
};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::{
    Error,
    broker::{Broker, Delivery, Published},
    consumer::ConsumerConfig,
};

/// How events are stored on the server: one stream per set of subjects.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The stream's name, such as `SHOP`.
    pub name: String,
    /// The subjects it stores, wildcards allowed, such as `shop.>`.
    pub subjects: Vec<String>,
    /// On disk (the default) or in memory.
    pub storage: Storage,
    /// Copies kept in a cluster. Default 1.
    pub replicas: usize,
    /// How long the server remembers message ids to drop duplicates: a
    /// relay's retry of an event inside it is dropped by the server.
    /// Default 2 minutes.
    pub duplicate_window: Duration,
    /// How long events are kept. Default 7 days.
    pub max_age: Duration,
    /// The most bytes the stream holds. When it is full, publishing fails
    /// (and the outbox keeps the events) rather than old events being
    /// dropped. Default 1 GiB.
    pub max_bytes: i64,
}

impl StreamConfig {
    /// A stream called `name` for `subjects`, with the defaults.
    pub fn new<I, S>(name: impl Into<String>, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }

    fn to_nats(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            storage: match self.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            discard: DiscardPolicy::New,
            ..Default::default()
        }
    }
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk: survives a restart of the server.
    File,
    /// In memory: lost when the server stops.
    Memory,
}

/// How to reach JetStream, and what to create there.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// The server's URL, such as `nats://127.0.0.1:4222`.
    pub url: String,
    /// The streams to create or update at connect.
    pub streams: Vec<StreamConfig>,
    /// The stream dead letters go to, for the subjects
    /// `sinew.dead.>` (each consumer group's dead letters go to
    /// `sinew.dead.<group>`). Created at connect.
    pub dead_letters: StreamConfig,
    /// How long a connect may take. Default 5s.
    pub connect_timeout: Duration,
    /// How long to wait for the server to confirm a publish or an
    /// acknowledgement, and to answer an API request. Default 5s.
    pub request_timeout: Duration,
    /// Publishes awaiting the server's confirmation, at most; further
    /// publishes wait. Default 4096.
    pub max_publishes_in_flight: usize,
}

impl JetStreamConfig {
    /// The server at `url`, with no stream of its own yet (add them with
    /// [`stream`](Self::stream)) and the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            streams: Vec::new(),
            dead_letters: StreamConfig::new("SINEW_DEAD_LETTERS", ["sinew.dead.>"]),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_publishes_in_flight: 4096,
        }
    }

    /// Adds a stream to create at connect.
    #[must_use]
    pub fn stream(mut self, stream: StreamConfig) -> Self {
        self.streams.push(stream);
        self
    }
}

/// NATS JetStream as sinew's broker. Clones share the connection.
#[derive(Debug, Clone)]
pub struct JetStream {
    client: async_nats::Client,
    context: Context,
}

impl JetStream {
    /// Connects and creates or updates the configured streams.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the server cannot be reached (the message
    /// names the server without credentials) or refuses a stream.
    pub async fn connect(config: JetStreamConfig) -> Result<Self, Error> {
        let server = redact(&config.url);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .name("sinew-events")
            .connect(config.url.as_str())
            .await
            .map_err(|e| Error::broker(format!("cannot connect to {server}: {e}")))?;
        let context = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(config.max_publishes_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        for stream in config.streams.iter().chain([&config.dead_letters]) {
            context
                .create_or_update_stream(stream.to_nats())
                .await
                .map_err(|e| Error::broker(format!("stream `{}`: {e}", stream.name)))?;
        }
        Ok(Self { client, context })
    }

    /// The JetStream context underneath, for what sinew does not cover.
    pub fn context(&self) -> &Context {
        &self.context
    }
}

/// The URL with any user and password taken out.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

/// The durable consumer name of consumer group `group` on `subject`: the
/// group, two underscores, then the subject with `.` as `_` (so that one
/// group can consume several event types from one stream). The name to
/// look for in `nats consumer info`.
pub fn durable_name(group: &str, subject: &str) -> String {
    let subject: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{group}__{subject}")
}

impl Broker for JetStream {
    type Delivery = JetStreamDelivery;
    type Deliveries = futures_util::stream::BoxStream<'static, Result<JetStreamDelivery, Error>>;

    async fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Published, Error> {
        let ack = self
            .context
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(Error::broker)?
            .await
            .map_err(Error::broker)?;
        Ok(Published {
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(
        &self,
        subject: &str,
        config: &ConsumerConfig,
    ) -> Result<Self::Deliveries, Error> {
        config.validate()?;
        let stream_name = self
            .context
            .stream_by_subject(subject)
            .await
            .map_err(|e| Error::broker(format!("no stream stores `{subject}`: {e}")))?;
        let stream = self
            .context
            .get_stream_no_info(&stream_name)
            .await
            .map_err(Error::broker)?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(durable_name(&config.group, subject)),
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                // One delivery more than the handler gets: an event whose
                // acknowledgement timed out on its last delivery comes
                // once more, to be dead-lettered.
                max_deliver: i64::from(config.max_deliver) + 1,
                max_ack_pending: i64::from(config.max_ack_pending),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::broker(format!("consumer `{}`: {e}", config.group)))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(config.max_ack_pending.clamp(1, 256) as usize)
            .messages()
            .await
            .map_err(Error::broker)?;
        Ok(messages
            .map(|message| message.map(JetStreamDelivery).map_err(Error::broker))
            .boxed())
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// A message delivered by JetStream.
#[derive(Debug)]
pub struct JetStreamDelivery(jetstream::Message);

impl Delivery for JetStreamDelivery {
    fn subject(&self) -> &str {
        self.0.subject.as_str()
    }

    fn headers(&self) -> Option<&HeaderMap> {
        self.0.headers.as_ref()
    }

    fn payload(&self) -> &Bytes {
        &self.0.payload
    }

    fn delivered(&self) -> u64 {
        self.0
            .info()
            .map(|info| u64::try_from(info.delivered).unwrap_or(1))
            .unwrap_or(1)
    }

    async fn ack(&self) -> Result<(), Error> {
        self.0.double_ack().await.map_err(Error::broker)
    }

    async fn nak(&self, delay: Duration) -> Result<(), Error> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(Error::broker)
    }

    async fn term(&self) -> Result<(), Error> {
        self.0.ack_with(AckKind::Term).await.map_err(Error::broker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_out_of_messages() {
        assert_eq!(
            redact("nats://user:secret@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(redact("tok@host"), "***@host");
        assert_eq!(redact("nats://host:4222"), "nats://host:4222");
    }

    #[test]
    fn durable_names_hold_no_dots() {
        assert_eq!(
            durable_name("shipping", "shop.orders.confirmed"),
            "shipping__shop_orders_confirmed"
        );
    }
}
