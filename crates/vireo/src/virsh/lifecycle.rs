//! Lifecycle verbs: define, undefine, create, start, shutdown, destroy,
//! reboot, reset, suspend, resume, autostart.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use manager::client::{Action, Client};

use super::{console, name_of, warn, Failure, Output};

/// A verb taking only a domain.
#[derive(Debug, Args)]
pub struct DomArgs {
    /// Domain name, id or UUID.
    pub domain: String,
}

/// `define FILE`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The domain's libvirt XML.
    pub file: PathBuf,
}

/// `create FILE`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The domain's libvirt XML.
    pub file: PathBuf,
    /// Leave the vCPUs paused.
    #[arg(long)]
    pub paused: bool,
    /// Attach to the console once created.
    #[arg(long)]
    pub console: bool,
}

/// `start DOMAIN`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Domain name or UUID.
    pub domain: String,
    /// Leave the vCPUs paused.
    #[arg(long)]
    pub paused: bool,
    /// Attach to the console once started.
    #[arg(long)]
    pub console: bool,
}

/// `destroy DOMAIN`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Ask the VMM to stop (SIGTERM) and wait, rather than killing it.
    #[arg(long)]
    pub graceful: bool,
}

/// `autostart DOMAIN`.
#[derive(Debug, Args)]
pub struct AutostartArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Do not start it with the daemon.
    #[arg(long)]
    pub disable: bool,
}

/// The verbs that are one call and one message.
#[derive(Debug, Clone, Copy)]
pub enum Simple {
    /// `shutdown`.
    Shutdown,
    /// `reboot`.
    Reboot,
    /// `reset`.
    Reset,
    /// `suspend`.
    Suspend,
    /// `resume`.
    Resume,
}

/// Read a definition file, with virsh's message when it cannot be.
pub fn read_file(path: &Path) -> Result<String, Failure> {
    read_definition(path)
        .map_err(|cause| Failure(format!("Failed to open file '{}': {cause}", path.display())))
}

/// A definition file's text, reading no more than the daemon accepts (a
/// `/dev/zero` or a huge file is refused, not read whole); the cause
/// without Rust's ` (os error N)` when it cannot be read.
pub fn read_definition(path: &Path) -> Result<String, String> {
    let max = manager::client::MAX_DEFINITION_BYTES;
    let cause = |e: std::io::Error| manager::client::io_cause(&e);
    let file = std::fs::File::open(path).map_err(cause)?;
    let mut text = String::new();
    // One byte over the bound tells a file that is too large.
    file.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_string(&mut text)
        .map_err(cause)?;
    if text.len() > max {
        return Err(format!(
            "over {max} bytes, the largest definition the daemon accepts"
        ));
    }
    Ok(text)
}

/// `define FILE`.
pub fn define(c: &mut Client, a: &FileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.define(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Domain '{}' defined from {}",
        answer.name,
        a.file.display()
    )))
}

/// `undefine DOMAIN`.
pub fn undefine(c: &mut Client, a: &DomArgs) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    c.undefine(&a.domain)?;
    Ok(Output::line(format!("Domain '{name}' has been undefined")))
}

/// `create FILE`.
pub fn create(c: &mut Client, a: &CreateArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.create(&xml, a.paused)?;
    answer.warnings.iter().for_each(|w| warn(w));
    let message = format!(
        "Domain '{}' created from {}\n",
        answer.name,
        a.file.display()
    );
    if a.console {
        super::print_out(&message);
        return console::attach(c, &answer.name, &answer.uuid, false);
    }
    Ok(Output::text(message))
}

/// `start DOMAIN`.
pub fn start(c: &mut Client, a: &StartArgs) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    c.start(&a.domain, a.paused)?;
    let message = format!("Domain '{name}' started\n");
    if a.console {
        super::print_out(&message);
        return console::attach(c, &name, &a.domain, false);
    }
    Ok(Output::text(message))
}

/// shutdown, reboot, reset, suspend, resume.
pub fn simple(c: &mut Client, a: &DomArgs, verb: Simple) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    let (action, done) = match verb {
        Simple::Shutdown => (Action::Shutdown, "is being shutdown"),
        Simple::Reboot => (Action::Reboot, "is being rebooted"),
        Simple::Reset => (Action::Reset, "was reset"),
        Simple::Suspend => (Action::Suspend, "suspended"),
        Simple::Resume => (Action::Resume, "resumed"),
    };
    c.action(&a.domain, action)?;
    Ok(Output::line(format!("Domain '{name}' {done}")))
}

/// `destroy DOMAIN`.
pub fn destroy(c: &mut Client, a: &DestroyArgs) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    c.destroy(&a.domain, a.graceful)?;
    Ok(Output::line(format!("Domain '{name}' destroyed")))
}

/// `autostart DOMAIN`.
pub fn autostart(c: &mut Client, a: &AutostartArgs) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    c.set_autostart(&a.domain, !a.disable)?;
    let what = if a.disable { "unmarked" } else { "marked" };
    Ok(Output::line(format!(
        "Domain '{name}' {what} as autostarted"
    )))
}
