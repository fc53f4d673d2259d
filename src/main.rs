//! `slotguard`: parse the command line, start logging, dispatch.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = match slotguard::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line: what was wrong (clap lists missing arguments on the lines
            // after its first). `--help` has the rest.
            let rendered = e.render().to_string();
            let what: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
                .collect();
            eprintln!("{} (see --help)", what.join(" "));
            std::process::exit(2);
        }
    };
    // A server says what it does (info: a line per request, incident change, audit
    // run, alert delivery); the other commands print their own results and only warn.
    let default_level = match cli.command {
        slotguard::cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_env("SLOTGUARD_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        slotguard::cli::LogFormat::Text => logs.init(),
        slotguard::cli::LogFormat::Json => logs.json().init(),
    }
    if let Err(e) = slotguard::cli::run(cli).await {
        match e {
            slotguard::cli::CliError::Found(_) => eprintln!("{e}"),
            _ => eprintln!("error: {e}"),
        }
        std::process::exit(e.exit_code());
    }
}
