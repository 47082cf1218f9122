use clap::Parser;

fn main() {
    let args = match strata::cli::config_file::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = strata::cli::Cli::parse_from(args);
    if let Err(e) = strata::cli::run(cli) {
        eprintln!("strata: error: {e:#}");
        std::process::exit(1);
    }
}
