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
    // `vireo run` parses its own flags only: building the whole command
    // tree (every virsh verb) costs start-up time and memory a VMM that
    // starts in milliseconds should not pay (bench/startup.py).
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        // A jailed VMM forks its keeper first thing, before the arguments
        // are parsed: the less the keeper's copy of this process holds,
        // the less the fork, the VMM's writes after it and the keeper's
        // exit cost (crates/jail/src/keeper.rs).
        let keeper = std::env::args_os()
            .skip(2)
            .any(|a| a == "--jail" || a.as_encoded_bytes().starts_with(b"--jail="))
            .then(jail::fork_keeper_early)
            .flatten();
        let run = match cli::RunCli::try_parse_from(
            std::iter::once(std::ffi::OsString::from("vireo run"))
                .chain(std::env::args_os().skip(2)),
        ) {
            Ok(run) => run,
            Err(e) => return usage_error(e),
        };
        init_tracing(run.verbose);
        return run::run_command(run.args, keeper);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let cli::Command::Daemon(args) = cli.command {
        return daemon_cmd::daemon_command(args, cli.verbose);
    }
    init_tracing(cli.verbose);
    match cli.command {
        cli::Command::Run(args) => run::run_command(*args, None),
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
    // Colour codes only where a terminal shows them, not in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let directives = std::env::var("VIREO_LOG")
        .ok()
        .and_then(|d| tracing_subscriber::EnvFilter::try_new(d).ok());
    match directives {
        Some(filter) => fmt.with_env_filter(filter).init(),
        // A plain level needs no directive parser (which compiles regular
        // expressions at start-up).
        None => fmt.with_max_level(level).init(),
    }
}
