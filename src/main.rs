use clap::Parser;

fn main() {
    let cli = strata::cli::Cli::parse();
    if let Err(e) = strata::cli::run(cli) {
        eprintln!("strata: error: {e:#}");
        std::process::exit(1);
    }
}
