use clap::Parser;

fn main() {
    // glibc gives every thread that allocates its own arena and keeps freed
    // memory there; two arenas keep the daemon's RSS near what it really uses.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = strata::cli::Cli::parse();
    if let Err(e) = strata::cli::run(cli) {
        eprintln!("strata: error: {e:#}");
        std::process::exit(1);
    }
}
