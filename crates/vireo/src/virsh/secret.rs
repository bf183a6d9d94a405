//! Secret verbs: secret-define, secret-undefine, secret-list,
//! secret-dumpxml, secret-set-value, secret-get-value. Messages as virsh
//! 9's. A value is read from a file or the command line, sent to the
//! daemon in base64, and printed only by secret-get-value.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use manager::api::SecretSummary;
use manager::client::Client;

use super::lifecycle::read_file;
use super::table::Table;
use super::{warn, Failure, Output};

/// The largest value file read, in bytes (the daemon's limit, base64'd).
const MAX_VALUE_FILE: u64 = 128 * 1024;

/// `secret-define FILE`.
#[derive(Debug, Args)]
pub struct SecretFileArgs {
    /// The secret's libvirt XML.
    pub file: PathBuf,
}

/// A verb taking only a secret.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// The secret's UUID or usage id.
    pub secret: String,
}

/// `secret-dumpxml SECRET`.
#[derive(Debug, Args)]
pub struct SecretDumpxmlArgs {
    /// The secret's UUID or usage id.
    pub secret: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `secret-list`.
#[derive(Debug, Args)]
pub struct SecretListArgs {
    /// Only ephemeral secrets.
    #[arg(long)]
    pub ephemeral: bool,
    /// Only persistent secrets.
    #[arg(long, conflicts_with = "ephemeral")]
    pub no_ephemeral: bool,
    /// Only private secrets.
    #[arg(long)]
    pub private: bool,
    /// Only secrets whose value can be read back.
    #[arg(long, conflicts_with = "private")]
    pub no_private: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `secret-set-value SECRET (--file FILE [--plain] | --base64 B64 | B64 |
/// --interactive)`.
#[derive(Debug, Args)]
pub struct SecretSetValueArgs {
    /// The secret's UUID or usage id.
    pub secret: String,
    /// The value in base64 (virsh's older positional form).
    #[arg(value_name = "BASE64", conflicts_with_all = ["base64", "file"])]
    pub value: Option<String>,
    /// The value in base64.
    #[arg(long, conflicts_with = "file")]
    pub base64: Option<String>,
    /// A file holding the value in base64 (or, with --plain, the value
    /// itself).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The file holds the value itself, not its base64.
    #[arg(long, requires = "file")]
    pub plain: bool,
    /// Read the value itself from the terminal, not echoed (or one line
    /// from standard input when it is no terminal).
    #[arg(long, conflicts_with_all = ["value", "base64", "file"])]
    pub interactive: bool,
}

/// `secret-get-value SECRET`.
#[derive(Debug, Args)]
pub struct SecretGetValueArgs {
    /// The secret's UUID or usage id.
    pub secret: String,
    /// Print the value itself, not its base64.
    #[arg(long, conflicts_with = "json")]
    pub plain: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `secret-define FILE`.
pub fn define(c: &mut Client, a: &SecretFileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.secret_define(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!("Secret {} created", answer.uuid)))
}

/// `secret-undefine SECRET`.
pub fn undefine(c: &mut Client, a: &SecretArgs) -> Result<Output, Failure> {
    c.secret_undefine(&a.secret)?;
    Ok(Output::line(format!("Secret {} deleted", a.secret)))
}

impl SecretListArgs {
    fn keeps(&self, s: &SecretSummary) -> bool {
        (!self.ephemeral || s.ephemeral)
            && (!self.no_ephemeral || !s.ephemeral)
            && (!self.private || s.private)
            && (!self.no_private || !s.private)
    }
}

/// `secret-list`.
pub fn list(c: &mut Client, a: &SecretListArgs) -> Result<Output, Failure> {
    let all = c.secrets()?.value;
    let kept: Vec<SecretSummary> = all.into_iter().filter(|s| a.keeps(s)).collect();
    if a.json {
        let json = serde_json::to_string(&kept)
            .map_err(|e| Failure(format!("cannot encode the list: {e}")))?;
        return Ok(Output::json(json));
    }
    let mut t = Table::new(&["UUID", "Usage"]);
    for s in &kept {
        let usage = match (&s.usage_type, &s.usage_id) {
            (Some(t), Some(id)) => format!("{t} {id}"),
            _ => "Unused".to_string(),
        };
        t.row(vec![s.uuid.clone(), usage]);
    }
    Ok(Output::text(t.render()))
}

/// `secret-dumpxml SECRET`.
pub fn dumpxml(c: &mut Client, a: &SecretDumpxmlArgs) -> Result<Output, Failure> {
    let r = c.secret_xml(&a.secret)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut xml = r.value.xml;
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(Output::text(xml))
}

/// A value file's bytes, bounded.
fn read_value_file(path: &Path) -> Result<Vec<u8>, Failure> {
    let fail = |cause: String| Failure(format!("failed to read '{}': {cause}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(manager::client::io_cause(&e)))?;
    let mut bytes = Vec::new();
    file.take(MAX_VALUE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(manager::client::io_cause(&e)))?;
    if bytes.len() as u64 > MAX_VALUE_FILE {
        return Err(fail(format!("over {MAX_VALUE_FILE} bytes")));
    }
    Ok(bytes)
}

/// `secret-set-value SECRET ...`.
pub fn set_value(c: &mut Client, a: &SecretSetValueArgs) -> Result<Output, Failure> {
    let base64 = match (&a.file, a.base64.as_ref().or(a.value.as_ref())) {
        _ if a.interactive => manager::base64::encode(read_interactive()?.as_bytes()),
        (Some(path), _) => {
            let bytes = read_value_file(path)?;
            if a.plain {
                manager::base64::encode(&bytes)
            } else {
                String::from_utf8(bytes).map_err(|_| {
                    Failure(format!(
                        "'{}' does not hold base64 text: give --plain for a file holding the value itself",
                        path.display()
                    ))
                })?
            }
        }
        (None, Some(b64)) => b64.clone(),
        (None, None) => return Err(Failure(
            "secret-set-value needs the value: --file FILE [--plain], --base64 BASE64, BASE64 or --interactive"
                .into(),
        )),
    };
    // Checked here too, so a typo is named before anything is sent.
    manager::base64::decode(&base64)
        .map_err(|why| Failure(format!("the secret value is not valid base64: {why}")))?;
    c.secret_set_value(&a.secret, base64.trim())?;
    Ok(Output::line("Secret value set"))
}

/// Restores a terminal's echo when dropped.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    /// Echo off on standard input, if it is a terminal.
    fn new() -> Option<Self> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        // SAFETY: a zeroed termios is a valid value to be filled.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr fills the struct it is given.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a termios read from the same terminal, echo cleared.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
        Some(Self { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: the settings read before, put back.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// `--interactive`: one line, without its line end, read with the
/// terminal's echo off (virsh's prompt on stderr).
fn read_interactive() -> Result<String, Failure> {
    use std::io::BufRead;
    let echo = EchoOff::new();
    if echo.is_some() {
        eprint!("Enter new value for secret:");
    }
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_VALUE_FILE)
        .read_line(&mut line);
    if echo.is_some() {
        eprintln!();
    }
    drop(echo);
    read.map_err(|e| Failure(format!("cannot read the value: {e}")))?;
    let value = line.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(Failure("no value was given".into()));
    }
    Ok(value)
}

/// `secret-get-value SECRET`.
pub fn get_value(c: &mut Client, a: &SecretGetValueArgs) -> Result<Output, Failure> {
    let r = c.secret_value(&a.secret)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    if a.plain {
        let bytes = manager::base64::decode(&r.value.value)
            .map_err(|why| Failure(format!("the daemon sent a malformed value: {why}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Failure("the value is not text: read it without --plain".into()))?;
        return Ok(Output::text(text));
    }
    // As virsh: the value without a newline of its own; the blank line
    // every verb ends with ends its line.
    Ok(Output::text(r.value.value))
}
