//! `edit`: the domain's persistent XML in `$VISUAL` or `$EDITOR` (`vi`
//! when neither is set), then `define` of the result. The daemon validates
//! before it saves, so an edit it refuses leaves the definition as it was.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use manager::client::Client;

use super::lifecycle::{read_definition, DomArgs};
use super::{name_of, warn, Failure, Output};

/// A temporary file removed when dropped.
struct TempXml(PathBuf);

impl Drop for TempXml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Create `vireo-edit-*.xml` in the temporary directory, only ours (0600,
/// created new, so nothing planted there is written through).
fn temp_file(text: &str) -> Result<TempXml, Failure> {
    let dir = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..16u32 {
        let path = dir.join(format!(
            "vireo-edit-{}-{nanos:x}-{attempt}.xml",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                let file = TempXml(path);
                f.write_all(text.as_bytes())
                    .map_err(|e| Failure(format!("cannot write {}: {e}", file.0.display())))?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Failure(format!(
                    "cannot create a file in {}: {e}",
                    dir.display()
                )))
            }
        }
    }
    Err(Failure(format!(
        "cannot create a file in {}: too many name clashes",
        dir.display()
    )))
}

/// The editor command, as virsh picks it.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// Opens `before` in the user's editor; the edited text, or `None` when
/// it was left unchanged. `what` names the object in errors ("domain
/// 'web'").
pub(super) fn edit_text(before: &str, what: &str) -> Result<Option<String>, Failure> {
    let file = temp_file(before)?;
    let editor = editor();
    // Through the shell as virsh does: EDITOR may carry arguments
    // (`emacs -nw`); the file is passed as "$1", never spliced in.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file.0)
        .status()
        .map_err(|e| Failure(format!("cannot run the editor '{editor}': {e}")))?;
    if !status.success() {
        return Err(Failure(format!(
            "the editor '{editor}' failed ({status}); {what} is unchanged"
        )));
    }
    let after = read_definition(&file.0)
        .map_err(|e| Failure(format!("cannot read back {}: {e}", file.0.display())))?;
    Ok((after != before).then_some(after))
}

/// `edit DOMAIN`.
pub fn edit(c: &mut Client, a: &DomArgs) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    let before = c.xml(&a.domain, true)?.value.xml;
    let Some(after) = edit_text(&before, &format!("domain '{name}'"))? else {
        return Ok(Output::line(format!(
            "Domain '{name}' XML configuration not changed."
        )));
    };
    let answer = c
        .define(&after)
        .map_err(|e| Failure(format!("{e}; domain '{name}' is unchanged")))?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Domain '{}' XML configuration edited.",
        answer.name
    )))
}
