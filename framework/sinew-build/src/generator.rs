//! Code for each service: tonic's client and server, then sinew's method
//! table and the glue that lets the server scaffold host the service.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use heck::{ToShoutySnakeCase, ToSnakeCase};
use proc_macro2::{Literal, TokenStream};
use prost_build::{Comments, Method, Service, ServiceGenerator};
use prost_types::method_options::IdempotencyLevel;
use quote::{format_ident, quote};

use crate::options::{Auth, Hedging, Policy, Retry};

/// Wraps tonic's generator and appends sinew's code after each service.
pub(crate) struct SinewGenerator {
    pub(crate) tonic: Box<dyn ServiceGenerator>,
    /// The path the code reaches the framework through (`::sinew`).
    pub(crate) framework: TokenStream,
    pub(crate) policies: HashMap<String, Policy>,
    /// Only these services (fully qualified) get code; all when `None`.
    pub(crate) services: Option<HashSet<String>>,
    pub(crate) build_client: bool,
    pub(crate) build_server: bool,
}

/// The import each of tonic's generated client and server modules opens
/// with; every other mention of `tonic` in them is below it.
const TONIC_IMPORT: &str = "use tonic::codegen::*;";

impl ServiceGenerator for SinewGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        if let Some(wanted) = &self.services
            && !wanted.contains(&full_name)
        {
            return;
        }
        let extra = self.sinew_code(&service, &full_name);
        let start = buf.len();
        self.tonic.generate(service, buf);
        // tonic's client and server modules name `tonic` as a crate of the
        // user's; each gets it from the framework instead, so the user's
        // crate needs no dependency on tonic.
        let tonic_code = buf.split_off(start);
        let framework = &self.framework;
        let import = format!("use {} ::tonic; {TONIC_IMPORT}", framework);
        buf.push_str(&tonic_code.replace(TONIC_IMPORT, &import));
        buf.push_str(&extra.to_string());
    }

    fn finalize(&mut self, buf: &mut String) {
        self.tonic.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.tonic.finalize_package(package, buf);
    }
}

impl SinewGenerator {
    fn sinew_code(&self, service: &Service, full_name: &str) -> TokenStream {
        let framework = &self.framework;
        let contract = format_ident!("{}Contract", service.name);
        let contract_doc = format!(
            " The method table of `{full_name}`: each RPC's path, streaming kind, \
             idempotency level and sinew policy, exactly as the contract declares them."
        );
        let mut consts = Vec::new();
        let mut names = Vec::new();
        for method in &service.methods {
            let ident = format_ident!("{}", method.name.to_shouty_snake_case());
            let info = self.method_info(method, full_name);
            let docs = doc_attrs(&method.comments);
            let summary = format!(" `{}`", method.proto_name);
            consts.push(quote! {
                #[doc = #summary]
                #[doc = ""]
                #(#docs)*
                pub const #ident: #framework::contract::MethodInfo = #info;
            });
            names.push(ident);
        }

        let server = self.build_server.then(|| {
            let server_mod = format_ident!("{}_server", service.name.to_snake_case());
            let server_type = format_ident!("{}Server", service.name);
            let server_trait = format_ident!("{}", service.name);
            // The package file is included at the module path of its package,
            // so the root (where FILE_DESCRIPTOR_SET lives) is one `super`
            // per package segment away.
            let depth = service.package.split('.').filter(|s| !s.is_empty()).count();
            let root = std::iter::repeat_n(quote!(super::), depth);
            quote! {
                impl<T: #server_mod::#server_trait> #framework::server::ServiceDefinition
                    for #server_mod::#server_type<T>
                {
                    type Contract = #contract;
                    const FILE_DESCRIPTOR_SET: &'static [u8] = #(#root)* FILE_DESCRIPTOR_SET;

                    fn with_message_limits(self, max_receive: usize, max_send: usize) -> Self {
                        self.max_decoding_message_size(max_receive)
                            .max_encoding_message_size(max_send)
                    }

                    fn with_compression(
                        mut self,
                        accept: &[#framework::tonic::codec::CompressionEncoding],
                        send: impl ::core::iter::IntoIterator<
                            Item = #framework::tonic::codec::CompressionEncoding,
                        >,
                    ) -> Self {
                        for &encoding in accept {
                            self = self.accept_compressed(encoding);
                        }
                        for encoding in send {
                            self = self.send_compressed(encoding);
                        }
                        self
                    }
                }
            }
        });

        let client = self.build_client.then(|| {
            let client_mod = format_ident!("{}_client", service.name.to_snake_case());
            let client_type = format_ident!("{}Client", service.name);
            let client_doc = format!(
                " A client of `{full_name}` that comes wrapped in sinew's resilience layers: \
                 deadlines, retries or hedging as the contract allows, a circuit breaker per \
                 endpoint, a bulkhead and load balancing.\n\n \
                 Build it with [`connect`](Self::connect); call the RPCs as on tonic's \
                 [`{client_mod}::{client_type}`], which it dereferences to. Clones share \
                 connections, breakers, bulkhead and retry throttle."
            );
            quote! {
                #[doc = #client_doc]
                #[derive(Debug, Clone)]
                pub struct #client_type(
                    #client_mod::#client_type<#framework::client::Client>,
                    #framework::client::Client,
                );

                impl #client_type {
                    /// Connects to the service with every resilience layer on, taking
                    /// per-method policy from the contract (and the service config, if
                    /// `config` has one). Connections are made lazily, per endpoint.
                    pub async fn connect(
                        config: #framework::client::ClientConfig,
                    ) -> ::core::result::Result<Self, #framework::client::ClientError> {
                        let send = config.send_compression();
                        let accept = config.accepts_compressed();
                        #framework::client::Client::connect::<#contract>(config)
                            .await
                            .map(|client| {
                                let mut inner = #client_mod::#client_type::new(client.clone());
                                if accept {
                                    for &encoding in #framework::client::ACCEPTED_COMPRESSION {
                                        inner = inner.accept_compressed(encoding);
                                    }
                                }
                                if let ::core::option::Option::Some(encoding) = send {
                                    inner = inner.send_compressed(encoding);
                                }
                                Self(inner, client)
                            })
                    }

                    /// This client, compressing its requests with `encoding`:
                    /// call the methods whose requests should be compressed on
                    /// a clone made with it (clones share connections).
                    #[must_use]
                    pub fn send_compressed(
                        self,
                        encoding: #framework::tonic::codec::CompressionEncoding,
                    ) -> Self {
                        Self(self.0.send_compressed(encoding), self.1)
                    }

                    /// The resilient client underneath, which calls any method
                    /// of the contract by its path with the same layers: a saga
                    /// step built from a method (`Step::rpc` in `sinew::saga`)
                    /// calls the method and its compensation through it.
                    pub fn client(&self) -> &#framework::client::Client {
                        &self.1
                    }

                    /// The tonic client underneath.
                    pub fn into_inner(self) -> #client_mod::#client_type<#framework::client::Client> {
                        self.0
                    }
                }

                impl ::core::ops::Deref for #client_type {
                    type Target = #client_mod::#client_type<#framework::client::Client>;

                    fn deref(&self) -> &Self::Target {
                        &self.0
                    }
                }

                impl ::core::ops::DerefMut for #client_type {
                    fn deref_mut(&mut self) -> &mut Self::Target {
                        &mut self.0
                    }
                }
            }
        });

        quote! {
            #[doc = #contract_doc]
            #[derive(Debug, Clone, Copy, Default)]
            pub struct #contract;

            impl #contract {
                #(#consts)*
            }

            impl #framework::contract::Contract for #contract {
                const SERVICE: &'static str = #full_name;
                const METHODS: &'static [#framework::contract::MethodInfo] = &[#(Self::#names),*];
            }

            #server

            #client
        }
    }

    fn method_info(&self, method: &Method, full_name: &str) -> TokenStream {
        let framework = &self.framework;
        let name = &method.proto_name;
        let path = format!("/{full_name}/{name}");
        let streaming = match (method.client_streaming, method.server_streaming) {
            (false, false) => quote!(Unary),
            (false, true) => quote!(ServerStreaming),
            (true, false) => quote!(ClientStreaming),
            (true, true) => quote!(Bidirectional),
        };
        let idempotency = match method.options.idempotency_level() {
            IdempotencyLevel::IdempotencyUnknown => quote!(Unknown),
            IdempotencyLevel::NoSideEffects => quote!(NoSideEffects),
            IdempotencyLevel::Idempotent => quote!(Idempotent),
        };
        let policy = match self.policies.get(&path) {
            Some(policy) => policy_tokens(framework, policy),
            None => quote!(#framework::contract::MethodPolicy::NONE),
        };
        quote! {
            #framework::contract::MethodInfo {
                name: #name,
                path: #path,
                streaming: #framework::contract::Streaming::#streaming,
                idempotency: #framework::contract::Idempotency::#idempotency,
                policy: #policy,
            }
        }
    }
}

fn policy_tokens(framework: &TokenStream, policy: &Policy) -> TokenStream {
    let timeout = option_tokens(policy.timeout.map(duration_tokens));
    let retry = option_tokens(policy.retry.as_ref().map(|r| retry_tokens(framework, r)));
    let hedging = option_tokens(
        policy
            .hedging
            .as_ref()
            .map(|h| hedging_tokens(framework, h)),
    );
    let compensated_by = option_tokens(policy.compensated_by.as_ref().map(|(path, response)| {
        let input = if *response {
            quote!(Response)
        } else {
            quote!(Request)
        };
        quote! {
            #framework::contract::Compensation {
                path: #path,
                input: #framework::contract::CompensationInput::#input,
            }
        }
    }));
    let auth = match &policy.auth {
        None => quote!(#framework::contract::Access::Undeclared),
        Some(Auth::Public) => quote!(#framework::contract::Access::Public),
        Some(Auth::Scopes(scopes)) => quote!(#framework::contract::Access::Scopes(&[#(#scopes),*])),
    };
    quote! {
        #framework::contract::MethodPolicy {
            timeout: #timeout,
            retry: #retry,
            hedging: #hedging,
            compensated_by: #compensated_by,
            auth: #auth,
        }
    }
}

fn retry_tokens(framework: &TokenStream, retry: &Retry) -> TokenStream {
    let max_attempts = retry.max_attempts;
    let initial = duration_tokens(retry.initial_backoff);
    let max = duration_tokens(retry.max_backoff);
    let multiplier = Literal::f64_suffixed(retry.backoff_multiplier);
    let codes = codes_tokens(framework, &retry.retryable_codes);
    quote! {
        #framework::contract::RetryPolicy {
            max_attempts: #max_attempts,
            initial_backoff: #initial,
            max_backoff: #max,
            backoff_multiplier: #multiplier,
            retryable_codes: #codes,
        }
    }
}

fn hedging_tokens(framework: &TokenStream, hedging: &Hedging) -> TokenStream {
    let max_attempts = hedging.max_attempts;
    let delay = duration_tokens(hedging.hedging_delay);
    let codes = codes_tokens(framework, &hedging.non_fatal_codes);
    quote! {
        #framework::contract::HedgingPolicy {
            max_attempts: #max_attempts,
            hedging_delay: #delay,
            non_fatal_codes: #codes,
        }
    }
}

fn codes_tokens(framework: &TokenStream, codes: &[&str]) -> TokenStream {
    let codes = codes.iter().map(|c| format_ident!("{c}"));
    quote!(#framework::contract::CodeSet::of(&[#(#framework::tonic::Code::#codes),*]))
}

fn duration_tokens(duration: Duration) -> TokenStream {
    let millis = duration.as_millis();
    if duration.subsec_nanos().is_multiple_of(1_000_000)
        && let Ok(millis) = u64::try_from(millis)
    {
        quote!(::core::time::Duration::from_millis(#millis))
    } else {
        let secs = duration.as_secs();
        let nanos = duration.subsec_nanos();
        quote!(::core::time::Duration::new(#secs, #nanos))
    }
}

fn option_tokens(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

/// Proto comments as `#[doc]` attributes, one per line.
fn doc_attrs(comments: &Comments) -> Vec<TokenStream> {
    comments
        .leading
        .iter()
        .map(|line| {
            let line = format!(" {}", line.trim_start());
            quote!(#[doc = #line])
        })
        .collect()
}
