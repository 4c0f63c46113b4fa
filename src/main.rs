//! The `nurture` binary: everything lives in the library; see `nurture::cli`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(nurture::cli::main());
}
