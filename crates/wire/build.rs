//! Compiles proto/*.proto with protox (pure Rust: no protoc binary) and
//! generates prost types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/ben.proto"], ["proto"])?;
    let mut cfg = prost_build::Config::new();
    cfg.btree_map(["."]);
    cfg.compile_fds(fds)?;
    Ok(())
}
