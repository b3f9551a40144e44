//! Per-call policy: the contract, then the service config, then the call.

use std::{collections::HashMap, time::Duration};

use tonic::Code;

use crate::{
    contract::{Idempotency, MethodInfo},
    {CallOptions, CallPolicy, CodeSet, RetryPolicy, service_config::ServiceConfig},
};

/// sinew's retry rules for a method that sets none: those of
/// [`RetryPolicy::DEFAULT`], on `UNAVAILABLE`, and on `RESOURCE_EXHAUSTED`
/// when the server sends pushback (the retry layer only retries that code
/// with pushback).
pub(crate) const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    retryable_codes: CodeSet::of(&[Code::Unavailable, Code::ResourceExhausted]),
    ..RetryPolicy::DEFAULT
};

/// The policy of every method of a contract, resolved once at connect.
#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    methods: HashMap<&'static str, CallPolicy>,
}

impl Resolver {
    /// Resolves each method: the client's defaults, overridden by the
    /// contract's `(sinew.method)` option, overridden by the service
    /// config.
    ///
    /// A service config's `retryPolicy` on a method the contract gives no
    /// idempotency level is applied, as grpc-go and grpc-java apply it:
    /// the operator who wrote it has opted in, as a caller does with
    /// [`CallOptions::retry_side_effects`]. Which methods that makes retry
    /// is logged once, here.
    pub(crate) fn new(
        methods: &'static [MethodInfo],
        default_timeout: Option<Duration>,
        default_retry: Option<RetryPolicy>,
        service_config: Option<&ServiceConfig>,
    ) -> Self {
        let mut opted_in = Vec::new();
        let methods = methods
            .iter()
            .map(|method| {
                let mut policy = CallPolicy {
                    path: method.path,
                    idempotency: method.idempotency,
                    streaming: method.streaming,
                    timeout: default_timeout,
                    retry: default_retry,
                    hedging: None,
                    retry_side_effects: false,
                };
                let contract = method.policy;
                if let Some(timeout) = contract.timeout {
                    policy.timeout = Some(timeout);
                }
                apply(&mut policy, contract.retry, contract.hedging);
                if let Some(config) = service_config.and_then(|c| c.method(method.path)) {
                    if let Some(timeout) = config.timeout {
                        policy.timeout = Some(timeout);
                    }
                    apply(&mut policy, config.retry, config.hedging);
                    if config.retry.is_some() && !method.idempotency.is_retry_safe() {
                        policy.retry_side_effects = true;
                        opted_in.push(method.path);
                    }
                }
                // Hedging sends copies: never for a method with side effects,
                // whatever a config says.
                if method.idempotency != Idempotency::NoSideEffects {
                    policy.hedging = None;
                }
                (method.path, policy)
            })
            .collect();
        if !opted_in.is_empty() {
            tracing::info!(
                methods = ?opted_in,
                "the service config retries methods that declare no idempotency level"
            );
        }
        Self { methods }
    }

    /// The policy of a call to `path` with the caller's `options`.
    pub(crate) fn policy(&self, path: &str, options: Option<&CallOptions>) -> Option<CallPolicy> {
        let mut policy = *self.methods.get(path)?;
        if let Some(options) = options {
            if let Some(timeout) = options.timeout {
                policy.timeout = Some(timeout);
            }
            if options.no_retry {
                policy.retry = None;
                policy.hedging = None;
            }
            policy.retry_side_effects |= options.retry_side_effects;
        }
        Some(policy)
    }
}

/// A retry policy replaces hedging and the other way round: a method does
/// one or the other (gRFC A6).
fn apply(
    policy: &mut CallPolicy,
    retry: Option<RetryPolicy>,
    hedging: Option<crate::HedgingPolicy>,
) {
    if let Some(retry) = retry {
        policy.retry = Some(retry);
        policy.hedging = None;
    }
    if let Some(hedging) = hedging {
        policy.hedging = Some(hedging);
        policy.retry = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_core::contract::{self, MethodPolicy, Streaming};

    const GET: MethodInfo = MethodInfo {
        name: "Get",
        path: "/t.v1.T/Get",
        streaming: Streaming::Unary,
        idempotency: Idempotency::NoSideEffects,
        policy: MethodPolicy {
            timeout: Some(Duration::from_millis(250)),
            retry: None,
            hedging: Some(contract::HedgingPolicy {
                max_attempts: 3,
                hedging_delay: Duration::from_millis(20),
                non_fatal_codes: CodeSet::of(&[Code::Unavailable]),
            }),
            ..MethodPolicy::NONE
        },
    };
    const POST: MethodInfo = MethodInfo {
        name: "Post",
        path: "/t.v1.T/Post",
        streaming: Streaming::Unary,
        idempotency: Idempotency::Unknown,
        policy: MethodPolicy::NONE,
    };
    const METHODS: &[MethodInfo] = &[GET, POST];

    #[test]
    fn the_contract_overrides_client_defaults() {
        let resolver = Resolver::new(
            METHODS,
            Some(Duration::from_secs(10)),
            Some(DEFAULT_RETRY),
            None,
        );
        let get = resolver.policy("/t.v1.T/Get", None).unwrap();
        assert_eq!(get.timeout, Some(Duration::from_millis(250)));
        assert!(get.hedging.is_some());
        assert_eq!(get.retry, None, "hedging replaces retries");
        let post = resolver.policy("/t.v1.T/Post", None).unwrap();
        assert_eq!(post.timeout, Some(Duration::from_secs(10)));
        assert_eq!(post.retry, Some(DEFAULT_RETRY));
        assert!(!post.may_repeat());
        assert!(resolver.policy("/t.v1.T/Nope", None).is_none());
    }

    #[test]
    fn the_service_config_overrides_the_contract_and_cannot_hedge_side_effects() {
        let config = ServiceConfig::from_json(
            r#"{"methodConfig": [
                {"name": [{"service": "t.v1.T", "method": "Get"}], "timeout": "1s",
                 "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                                 "backoffMultiplier": 2, "retryableStatusCodes": ["ABORTED"]}},
                {"name": [{"service": "t.v1.T", "method": "Post"}],
                 "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.01s"}}
            ]}"#,
        )
        .unwrap();
        let resolver = Resolver::new(METHODS, None, Some(DEFAULT_RETRY), Some(&config));
        let get = resolver.policy("/t.v1.T/Get", None).unwrap();
        assert_eq!(get.timeout, Some(Duration::from_secs(1)));
        assert_eq!(get.hedging, None);
        assert!(get.retry.unwrap().retryable_codes.contains(Code::Aborted));
        let post = resolver.policy("/t.v1.T/Post", None).unwrap();
        assert_eq!(post.hedging, None, "never hedge a method with side effects");
        assert!(!post.may_repeat(), "no retryPolicy for it: no opt-in");
    }

    #[test]
    fn a_service_config_retry_policy_opts_a_method_with_no_idempotency_in() {
        let config = ServiceConfig::from_json(
            r#"{"methodConfig": [
                {"name": [{"service": "t.v1.T", "method": "Post"}],
                 "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                                 "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}
            ]}"#,
        )
        .unwrap();
        let resolver = Resolver::new(METHODS, None, Some(DEFAULT_RETRY), Some(&config));
        let post = resolver.policy("/t.v1.T/Post", None).unwrap();
        assert_eq!(post.retry.unwrap().max_attempts, 3);
        assert!(post.may_repeat(), "the operator opted in");
        // The contract's level is unchanged: still never hedged.
        assert_eq!(post.idempotency, Idempotency::Unknown);
        // Without a service config, the same method does not repeat.
        let resolver = Resolver::new(METHODS, None, Some(DEFAULT_RETRY), None);
        assert!(!resolver.policy("/t.v1.T/Post", None).unwrap().may_repeat());
    }

    #[test]
    fn call_options_win() {
        let resolver = Resolver::new(METHODS, None, Some(DEFAULT_RETRY), None);
        let options = CallOptions {
            timeout: Some(Duration::from_millis(5)),
            retry_side_effects: true,
            no_retry: false,
        };
        let post = resolver.policy("/t.v1.T/Post", Some(&options)).unwrap();
        assert_eq!(post.timeout, Some(Duration::from_millis(5)));
        assert!(post.may_repeat());
        let off = CallOptions {
            no_retry: true,
            ..CallOptions::default()
        };
        let get = resolver.policy("/t.v1.T/Get", Some(&off)).unwrap();
        assert_eq!((get.retry, get.hedging), (None, None));
    }
}
