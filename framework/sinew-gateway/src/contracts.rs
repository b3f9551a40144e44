//! The upstreams' contracts: their descriptors, and the method table the
//! resilient clients and the access rules are built from.

use std::{path::PathBuf, time::Duration};

use prost_reflect::{
    DescriptorPool, MethodDescriptor, ReflectMessage as _, ServiceDescriptor, Value,
};
use prost_types::method_options::IdempotencyLevel;
use sinew_core::contract::{Access, Idempotency, MethodInfo, MethodPolicy, Streaming};

/// The contracts could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// A descriptor set file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A descriptor set is not valid.
    #[error("invalid descriptor set: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    /// A `.proto` file does not compile; the message names file and line.
    #[error("{0}")]
    Compile(String),
    /// A method's `(sinew.method)` option cannot be used.
    #[error("{method}: {message}")]
    Option {
        /// The method.
        method: String,
        /// What is wrong.
        message: String,
    },
}

/// The upstreams' contracts, as the gateway uses them.
#[derive(Debug, Clone)]
pub struct Contracts {
    pool: DescriptorPool,
    methods: &'static [MethodInfo],
    /// Each method by its path.
    by_path: std::collections::HashMap<&'static str, &'static MethodInfo>,
}

// === impl Contracts ===

impl Contracts {
    /// From encoded `FileDescriptorSet`s: the constants sinew-build
    /// generates (`FILE_DESCRIPTOR_SET`), or `protoc -o` files.
    pub fn from_encoded<'a>(
        sets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, ContractError> {
        let mut pool = DescriptorPool::new();
        for set in sets {
            // Decoded by prost-reflect itself, so that the options' extensions
            // (`sinew.method`, `google.api.http`) are kept. Sets often share
            // files (each carries its imports): the first copy of each stays.
            pool.decode_file_descriptor_set(set)?;
        }
        Self::from_pool(pool)
    }

    /// From descriptor set files and `.proto` files (compiled here with
    /// protox, importing from `includes`).
    pub fn from_files(
        descriptors: &[PathBuf],
        protos: &[PathBuf],
        includes: &[PathBuf],
    ) -> Result<Self, ContractError> {
        let mut sets = Vec::new();
        for path in descriptors {
            sets.push(std::fs::read(path).map_err(|source| ContractError::Read {
                path: path.clone(),
                source,
            })?);
        }
        if !protos.is_empty() {
            let includes: Vec<PathBuf> = if includes.is_empty() {
                protos
                    .iter()
                    .filter_map(|p| p.parent().map(PathBuf::from))
                    .collect()
            } else {
                includes.to_vec()
            };
            let resolver = sinew_build::file_resolver(&includes);
            let mut compiler = protox::Compiler::with_file_resolver(resolver);
            compiler.include_imports(true).include_source_info(false);
            for proto in protos {
                // Opened by the name it has under its include directory.
                let name = includes
                    .iter()
                    .find_map(|dir| proto.strip_prefix(dir).ok())
                    .unwrap_or(proto);
                compiler
                    .open_file(name)
                    .map_err(|error| ContractError::Compile(error.to_string()))?;
            }
            // Encoded by protox, so that the options' extensions stay.
            sets.push(compiler.encode_file_descriptor_set());
        }
        Self::from_encoded(sets.iter().map(Vec::as_slice))
    }

    fn from_pool(pool: DescriptorPool) -> Result<Self, ContractError> {
        let mut methods = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                methods.push(method_info(&pool, &service, &method)?);
            }
        }
        // Built once, at start: the tables the clients and the access rules
        // take live as long as the process (they are `'static` there).
        let methods: &'static [MethodInfo] = Box::leak(methods.into_boxed_slice());
        let by_path = methods.iter().map(|m| (m.path, m)).collect();
        Ok(Self {
            pool,
            methods,
            by_path,
        })
    }

    /// The descriptors.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every method of every service, with its idempotency level,
    /// streaming kind, timeout and access rule from the contract.
    pub fn methods(&self) -> &'static [MethodInfo] {
        self.methods
    }

    /// The table entry of the method at `path` (`/package.Service/Method`).
    pub fn method_info(&self, path: &str) -> Option<&'static MethodInfo> {
        self.by_path.get(path).copied()
    }

    /// The method at `path` (`/package.Service/Method`).
    pub fn method(&self, path: &str) -> Option<MethodDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
    }

    /// The full names of the services.
    pub fn services(&self) -> Vec<String> {
        self.pool
            .services()
            .map(|s| s.full_name().to_owned())
            .collect()
    }
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn method_info(
    pool: &DescriptorPool,
    service: &ServiceDescriptor,
    method: &MethodDescriptor,
) -> Result<MethodInfo, ContractError> {
    let proto = method.method_descriptor_proto();
    let idempotency = match proto.options.as_ref().map(|o| o.idempotency_level()) {
        Some(IdempotencyLevel::NoSideEffects) => Idempotency::NoSideEffects,
        Some(IdempotencyLevel::Idempotent) => Idempotency::Idempotent,
        _ => Idempotency::Unknown,
    };
    let mut policy = MethodPolicy::NONE;
    let fail = |message: String| ContractError::Option {
        method: method.full_name().to_owned(),
        message,
    };
    if let Some(extension) = pool.get_extension_by_name("sinew.method") {
        let options = method.options();
        if options.has_extension(&extension) {
            let value = options.get_extension(&extension);
            if let Some(policy_message) = value.as_message() {
                if let Some(Value::String(timeout)) =
                    policy_message.get_field_by_name("timeout").as_deref()
                    && !timeout.is_empty()
                {
                    let timeout: Duration = humantime::parse_duration(timeout)
                        .map_err(|e| fail(format!("timeout `{timeout}`: {e}")))?;
                    policy.timeout = Some(timeout);
                }
                policy.auth = access(policy_message, "auth");
            }
        }
    }
    if policy.auth == Access::Undeclared
        && let Some(extension) = pool.get_extension_by_name("sinew.service")
    {
        let options = service.options();
        if options.has_extension(&extension)
            && let Some(message) = options.get_extension(&extension).as_message()
        {
            policy.auth = access(message, "auth");
        }
    }
    Ok(MethodInfo {
        name: leak(method.name().to_owned()),
        path: leak(format!("/{}/{}", service.full_name(), method.name())),
        streaming: Streaming::from_flags(
            method.is_client_streaming(),
            method.is_server_streaming(),
        ),
        idempotency,
        policy,
    })
}

/// A `sinew.Access` field of `message`, if set.
fn access(message: &prost_reflect::DynamicMessage, field: &str) -> Access {
    let Some(field) = message.descriptor().get_field_by_name(field) else {
        return Access::Undeclared;
    };
    if !message.has_field(&field) {
        return Access::Undeclared;
    }
    let value = message.get_field(&field);
    let Some(access) = value.as_message() else {
        return Access::Undeclared;
    };
    if access.get_field_by_name("public").and_then(|v| v.as_bool()) == Some(true) {
        return Access::Public;
    }
    let scopes: Vec<&'static str> = access
        .get_field_by_name("scopes")
        .and_then(|v| {
            v.as_list().map(|list| {
                list.iter()
                    .filter_map(|s| s.as_str())
                    .map(|s| leak(s.to_owned()))
                    .collect()
            })
        })
        .unwrap_or_default();
    Access::Scopes(Box::leak(scopes.into_boxed_slice()))
}
