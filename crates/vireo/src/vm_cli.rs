//! `vireo vm`: talk to one running VM through its API socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// `vireo vm`.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// The VM's API socket (`vireo run --api-socket PATH`).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Run `vireo vm`: the client is not written yet, so it says so.
pub fn vm_command(args: VmArgs) -> ExitCode {
    let _ = args.socket;
    eprintln!("vireo: vm: the API client is not implemented yet");
    ExitCode::from(2)
}
