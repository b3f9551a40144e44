//! The services of `proto/storefront/`, for the gateway example, tests
//! and benchmark: a legacy orders service and its replacement (the same
//! contract), payments, shipments, and the order-details aggregator that
//! gathers the three.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::Stream;
use sinew::gateway::aggregate::{Aggregate, Part};
use sinew::prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::proto::{
    google::rpc,
    storefront::{
        details::v1::{
            GetOrderDetailsRequest, OrderDetailsReply, Part as PartStatus,
            order_details_server::OrderDetails,
        },
        orders::v1::{
            CreateOrderRequest, GetOrderRequest, Item, ListOrdersRequest, Order, OrdersClient,
            State, orders_server::Orders,
        },
        payments::v1::{GetPaymentRequest, Payment, PaymentsClient, payments_server::Payments},
        shipments::v1::{
            GetShipmentRequest, Shipment, ShipmentsClient, shipments_server::Shipments,
        },
    },
};

/// The orders every store starts with: `o-1` to `o-3` for `ada`, `o-4` for
/// `grace`.
pub fn seed_orders() -> BTreeMap<String, Order> {
    let order = |id: &str, customer: &str, items: Vec<Item>, seconds: i64| Order {
        id: id.to_owned(),
        customer: customer.to_owned(),
        total_cents: items
            .iter()
            .map(|i| i64::from(i.quantity) * i.unit_cents)
            .sum(),
        items,
        created_at: Some(Timestamp {
            seconds: 1_790_000_000 + seconds,
            nanos: 0,
        }),
        state: State::Paid as i32,
    };
    let item = |sku: &str, quantity, unit_cents| Item {
        sku: sku.to_owned(),
        quantity,
        unit_cents,
    };
    [
        order("o-1", "ada", vec![item("tea", 1, 450)], 10),
        order(
            "o-2",
            "ada",
            vec![item("tea", 2, 450), item("mug", 1, 1200)],
            20,
        ),
        order("o-3", "ada", vec![item("pot", 1, 3500)], 30),
        order("o-4", "grace", vec![item("mug", 3, 1200)], 40),
    ]
    .into_iter()
    .map(|o| (o.id.clone(), o))
    .collect()
}

/// An orders service: the legacy one, or its replacement. The
/// replacement can be given a bug (totals that ignore quantities), which
/// a shadow comparison finds.
#[derive(Debug, Clone)]
pub struct OrdersService {
    orders: Arc<std::sync::Mutex<BTreeMap<String, Order>>>,
    calls: Arc<AtomicU64>,
    buggy: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
    delay: Duration,
}

impl OrdersService {
    /// A service with the seed orders.
    pub fn new() -> Self {
        Self {
            orders: Arc::new(std::sync::Mutex::new(seed_orders())),
            calls: Arc::default(),
            buggy: Arc::default(),
            next_id: Arc::new(AtomicU64::new(100)),
            delay: Duration::ZERO,
        }
    }

    /// Answers every call after `delay` (a slow service, for shadows).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The switch of the replacement's bug: on, totals ignore quantities.
    pub fn bug(&self) -> Arc<AtomicBool> {
        self.buggy.clone()
    }

    /// Calls answered so far.
    pub fn calls(&self) -> Arc<AtomicU64> {
        self.calls.clone()
    }

    fn view(&self, order: &Order) -> Order {
        let mut order = order.clone();
        if self.buggy.load(Ordering::Relaxed) {
            order.total_cents = order.items.iter().map(|i| i.unit_cents).sum();
        }
        order
    }

    async fn begin(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

impl Default for OrdersService {
    fn default() -> Self {
        Self::new()
    }
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<Order, Status>> + Send>>;

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        self.begin().await;
        let id = &request.get_ref().id;
        let orders = self
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match orders.get(id) {
            Some(order) => Ok(Response::new(self.view(order))),
            None => Err(Status::not_found(format!("no order {id}"))),
        }
    }

    type ListOrdersStream = OrderStream;

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<Self::ListOrdersStream>, Status> {
        self.begin().await;
        let request = request.into_inner();
        let mut found: Vec<Order> = {
            let orders = self
                .orders
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            orders
                .values()
                .filter(|o| o.customer == request.customer)
                .map(|o| self.view(o))
                .collect()
        };
        found.reverse();
        if request.limit > 0 {
            found.truncate(request.limit as usize);
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            found.into_iter().map(Ok),
        ))))
    }

    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        self.begin().await;
        let Some(mut order) = request.into_inner().order else {
            return Err(Status::invalid_argument("order is required"));
        };
        if order.customer.is_empty() || order.items.is_empty() {
            return Err(Status::invalid_argument(
                "an order needs a customer and items",
            ));
        }
        order.id = format!("o-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        order.total_cents = order
            .items
            .iter()
            .map(|i| i64::from(i.quantity) * i.unit_cents)
            .sum();
        order.state = State::Placed as i32;
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(order.id.clone(), order.clone());
        Ok(Response::new(order))
    }
}

/// Payments of the seed orders.
#[derive(Debug, Clone, Default)]
pub struct PaymentsService;

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let id = request.into_inner().order_id;
        let order = seed_orders()
            .remove(&id)
            .ok_or_else(|| Status::not_found(format!("no payment for {id}")))?;
        Ok(Response::new(Payment {
            order_id: id,
            amount_cents: order.total_cents,
            method: "card".to_owned(),
            captured: true,
        }))
    }
}

/// Shipments of the seed orders.
#[derive(Debug, Clone, Default)]
pub struct ShipmentsService;

#[tonic::async_trait]
impl Shipments for ShipmentsService {
    async fn get_shipment(
        &self,
        request: Request<GetShipmentRequest>,
    ) -> Result<Response<Shipment>, Status> {
        let id = request.into_inner().order_id;
        if !seed_orders().contains_key(&id) {
            return Err(Status::not_found(format!("no shipment for {id}")));
        }
        Ok(Response::new(Shipment {
            tracking: format!("TRK-{id}"),
            order_id: id,
            carrier: "parcelco".to_owned(),
        }))
    }
}

/// Order details: the order, its payment and its shipment, asked of three
/// services at once. A part that fails is missing from the answer, and its
/// status says why; the call itself succeeds.
#[derive(Debug, Clone)]
pub struct DetailsService {
    orders: OrdersClient,
    payments: PaymentsClient,
    shipments: ShipmentsClient,
    part_timeout: Duration,
}

impl DetailsService {
    /// Gathers from these clients, each part allowed `part_timeout` inside
    /// the caller's deadline.
    pub fn new(
        orders: OrdersClient,
        payments: PaymentsClient,
        shipments: ShipmentsClient,
        part_timeout: Duration,
    ) -> Self {
        Self {
            orders,
            payments,
            shipments,
            part_timeout,
        }
    }
}

/// A part's outcome as the contract reports it.
fn part_status<T>(part: &Part<T>) -> PartStatus {
    let status = part.status();
    PartStatus {
        name: part.name.to_owned(),
        status: Some(rpc::Status {
            code: status.code,
            message: status.message,
            details: status.details,
        }),
    }
}

#[tonic::async_trait]
impl OrderDetails for DetailsService {
    async fn get_order_details(
        &self,
        request: Request<GetOrderDetailsRequest>,
    ) -> Result<Response<OrderDetailsReply>, Status> {
        let id = request.into_inner().order_id;
        let aggregate = Aggregate::new();
        let (mut orders, mut payments, mut shipments) = (
            self.orders.clone(),
            self.payments.clone(),
            self.shipments.clone(),
        );
        let (order, payment, shipment) = tokio::join!(
            aggregate.part("order", self.part_timeout, async {
                orders
                    .get_order(GetOrderRequest { id: id.clone() })
                    .await
                    .map(Response::into_inner)
            }),
            aggregate.part("payment", self.part_timeout, async {
                payments
                    .get_payment(GetPaymentRequest {
                        order_id: id.clone(),
                    })
                    .await
                    .map(Response::into_inner)
            }),
            aggregate.part("shipment", self.part_timeout, async {
                shipments
                    .get_shipment(GetShipmentRequest {
                        order_id: id.clone(),
                    })
                    .await
                    .map(Response::into_inner)
            }),
        );
        let parts = vec![
            part_status(&order),
            part_status(&payment),
            part_status(&shipment),
        ];
        Ok(Response::new(OrderDetailsReply {
            order: order.into_ok(),
            payment: payment.into_ok(),
            shipment: shipment.into_ok(),
            parts,
        }))
    }
}
