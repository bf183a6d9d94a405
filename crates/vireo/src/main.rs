//! `vireo`: the command line of the Vireo virtualization stack.

// Doc comments here are clap's help text, where `[,opt=...]` is option
// syntax, not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod cli;
mod daemon_cmd;
mod demo_guest;
mod img;
mod proxy;
mod run;
mod virsh;
mod vm_cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let cli::Command::Daemon(args) = cli.command {
        return daemon_cmd::daemon_command(args, cli.verbose);
    }
    init_tracing(cli.verbose);
    match cli.command {
        cli::Command::Run(args) => run::run_command(*args),
        cli::Command::Demo(args) => run::demo_command(args),
        cli::Command::Img(args) => img::img_command(args),
        cli::Command::Vm(args) => vm_cli::vm_command(args),
        cli::Command::Proxy(args) => proxy::proxy_command(args),
        cli::Command::Virsh(verb) => virsh::virsh_command(cli.connect.as_deref(), verb),
        // Handled above, before the CLI's own logging is set up.
        cli::Command::Daemon(_) => ExitCode::SUCCESS,
    }
}

/// Help and version go to stdout as clap prints them; a usage error is one
/// line on stderr (clap's first line, without its hint) and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            // clap's message is its first paragraph (a list of missing
            // arguments continues on indented lines); the rest is a hint.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            eprintln!("vireo: {}", message.trim_start_matches("error: "));
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only where a terminal shows them, not in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
