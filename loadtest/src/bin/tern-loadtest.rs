//! `tern-loadtest`: the harness on its own, same commands as `tern loadtest`. A leading
//! `loadtest` argument is accepted and skipped, so workers spawn the same way from
//! either binary (`<exe> loadtest worker`).

use clap::Parser;
use tern_loadtest::harness::{run_loadtest, LoadtestArgs};

#[derive(Parser)]
#[command(name = "tern-loadtest", version)]
struct Cli {
    #[command(flatten)]
    args: LoadtestArgs,
}

fn main() -> anyhow::Result<()> {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "loadtest") {
        argv.remove(1);
    }
    run_loadtest(Cli::parse_from(argv).args)
}
