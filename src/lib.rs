//! The contracts under `proto/`, compiled by sinew-build, for the examples,
//! integration tests and benchmarks of the workspace.

/// Generated code for every contract under `proto/`.
pub mod proto {
    sinew::include_contracts!();
}

pub mod echo;
pub mod storefront;
