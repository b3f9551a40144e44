//! Domain events: protobuf messages the contract declares as events.
//!
//! A message becomes an event through sinew's message option:
//!
//! ```proto
//! import "sinew/options.proto";
//!
//! message OrderConfirmed {
//!   option (sinew.event) = { subject: "shop.orders.confirmed" aggregate: "order_id" };
//!   string order_id = 1;
//! }
//! ```
//!
//! sinew-build checks the option at build time (the subject is a valid
//! NATS subject without wildcards; the aggregate field exists and is a
//! scalar fit to be a key) and implements [`Event`] for the message. The
//! events crate (`sinew-events`) then publishes and consumes it with no
//! string anywhere in the user's code.

/// A protobuf message declared as an event in its contract. Implemented by
/// generated code.
///
/// ```
/// use sinew_core::event::Event;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct OrderConfirmed {
///     #[prost(string, tag = "1")]
///     order_id: String,
/// }
///
/// impl Event for OrderConfirmed {
///     const TYPE: &'static str = "shop.orders.v1.OrderConfirmed";
///     const SUBJECT: &'static str = "shop.orders.confirmed";
///     const SCHEMA_VERSION: u32 = 1;
///     fn aggregate_id(&self) -> String {
///         self.order_id.clone()
///     }
/// }
///
/// let event = OrderConfirmed { order_id: "o-1".into() };
/// assert_eq!(event.aggregate_id(), "o-1");
/// ```
pub trait Event: prost::Message + Default + Send + Sync + 'static {
    /// The message's full protobuf name, such as `shop.orders.v1.OrderConfirmed`:
    /// the event's type on the wire.
    const TYPE: &'static str;
    /// The subject the event is published on, such as `shop.orders.confirmed`.
    const SUBJECT: &'static str;
    /// The schema version the contract declares (`version`, 1 when unset).
    const SCHEMA_VERSION: u32;

    /// The id of the aggregate the event belongs to, read from the field
    /// the contract names as `aggregate`: events of one aggregate keep
    /// their order.
    fn aggregate_id(&self) -> String;
}
