//! `palisade`: the operator's command line.
//!
//! Exit codes: 0 success; 1 a valid negative answer (miss, denied, refused transition,
//! not found, already exists); 2 backend unavailable (TLS failures included); 64 usage
//! error; 65 data or codec error; 75 every dedicated connection in use; 77 credentials
//! refused. With `--json` every command prints exactly one JSON object on stdout
//! (`jobs watch`: one per line, one per change, the last one the end), and errors go
//! to stderr as `{"error":{"kind":…,"message":…}}`.

use std::process::ExitCode;

mod args;
mod chart;
mod commands;
mod load;
mod output;

use clap::Parser;
use palisade::{Error, Mode};
use serde_json::json;

use crate::args::{Cli, Command};
use crate::commands::{cache::cache, doctor::build, doctor::doctor, jobs::jobs, throttle::limit, throttle::throttle};
use crate::output::Out;
pub(crate) use crate::output::exit_code;

/// The one dispatch of every command that runs on the runtime: `doctor` reports even
/// when the build fails, `load` (in a worker process) answers its tally, every other
/// command builds a `Palisade` first.
async fn run(cli: &Cli) -> Result<Out, Error> {
    match &cli.command {
        Command::Doctor => doctor(cli).await,
        Command::Load(_) => {
            let url = cli.url().unwrap_or_default().to_owned();
            let mode = cli.mode()?.unwrap_or(Mode::StrictDistributed);
            let tally = load::worker_main(mode, &url).await?;
            Ok(Out::ok(tally.clone(), tally.to_string()))
        }
        Command::Cache(c) => cache(&build(cli).await?, c).await,
        Command::Jobs(c) => jobs(&build(cli).await?, c, cli.json).await,
        Command::Throttle(c) => throttle(&build(cli).await?, c).await,
        Command::Limit { key, rate, burst } => limit(&build(cli).await?, key, rate, *burst).await,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` print as clap prints them.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Under `--json` every error is one JSON object on stderr, usage errors
            // included; the text is clap's, without its colours.
            if std::env::args().any(|a| a == "--json") {
                let message = e.render().to_string();
                let message = message.trim().trim_start_matches("error: ");
                eprintln!("{}", json!({"error": {"kind": "usage", "message": message}}));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(64);
        }
    };
    if let Command::Load(args) = &cli.command {
        if !load::is_worker() {
            return load_orchestrator(&cli, args);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(out) => {
            if cli.json {
                println!("{}", out.json);
            } else {
                println!("{}", out.text);
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            if cli.json {
                eprintln!(
                    "{}",
                    json!({"error": {"kind": e.kind().as_str(), "message": e.chain()}})
                );
            } else {
                eprintln!("error: {}", e.chain());
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn load_orchestrator(cli: &Cli, args: &load::LoadArgs) -> ExitCode {
    match load::orchestrate(args) {
        Ok((report, clean)) => {
            if cli.json {
                let mut slim = report.clone();
                for m in slim["modes"].as_array_mut().into_iter().flatten() {
                    m.as_object_mut().map(|o| o.remove("chart"));
                }
                println!("{slim}");
            } else {
                for m in report["modes"].as_array().into_iter().flatten() {
                    println!(
                        "mode {}: invariants {} · detect ≤ {} ms · recover ≤ {} ms",
                        m["mode"].as_str().unwrap_or(""),
                        m["invariants"],
                        m["detect_ms_max"],
                        m["recover_ms_max"]
                    );
                }
                println!("all invariants zero: {clean}");
            }
            ExitCode::from(if clean { 0 } else { 1 })
        }
        Err(e) => {
            if cli.json {
                eprintln!("{}", json!({"error": {"kind": "load", "message": e.to_string()}}));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
