//! Compiles the contracts under `proto/` exactly as a user's build would.

fn main() -> Result<(), sinew_build::Error> {
    sinew_build::compile_protos("proto")
}
