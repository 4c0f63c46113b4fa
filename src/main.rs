//! The `nurture` binary: everything lives in the library; see `nurture::cli`.
#![forbid(unsafe_code)]

// sled allocates and frees on every write; mimalloc doubles the engine's and the importer's
// throughput over glibc's malloc (see `cargo bench --bench engine`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(nurture::cli::main());
}
