fn main() -> Result<(), sinew_build::Error> {
    sinew_build::compile_protos("proto")
}
