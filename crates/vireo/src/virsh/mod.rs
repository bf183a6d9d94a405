//! virsh's verbs, as clients of the daemon's API (`manager::client`).
//!
//! Names, flags, messages and tables follow virsh 9, so habits and scripts
//! carry over: each verb's output ends with virsh's blank line, an error is
//! one `error: ...` line on stderr and exit status 1. `--json` on a verb
//! that reads prints the daemon's JSON instead (no blank line). One module
//! per verb family; this one holds what they share.

mod console;
mod devices;
mod edit;
mod events;
mod host;
mod iface;
mod iftune;
mod info;
mod lifecycle;
mod limits;
mod net;
mod pool;
mod secret;
mod table;
mod tuning;
mod vol_ops;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Subcommand;
use manager::client::uri::ConnectUri;
use manager::client::{Client, ClientError};

/// The verbs (flattened into `vireo`'s own).
#[derive(Debug, Subcommand)]
pub enum VirshCommand {
    /// Define (or update) a persistent domain from an XML file.
    Define(lifecycle::FileArgs),
    /// Remove a domain's definition (a running domain becomes transient).
    Undefine(lifecycle::DomArgs),
    /// Create and start a transient domain from an XML file.
    Create(lifecycle::CreateArgs),
    /// Start a defined domain.
    Start(lifecycle::StartArgs),
    /// Ask the guest to power off (ACPI power button).
    Shutdown(lifecycle::DomArgs),
    /// Stop a domain at once.
    Destroy(lifecycle::DestroyArgs),
    /// Reboot a domain.
    Reboot(lifecycle::DomArgs),
    /// Reset a domain, as the reset button.
    Reset(lifecycle::DomArgs),
    /// Pause a domain's vCPUs.
    Suspend(lifecycle::DomArgs),
    /// Run a paused domain again.
    Resume(lifecycle::DomArgs),
    /// Start a domain with the daemon (or no longer, with --disable).
    Autostart(lifecycle::AutostartArgs),
    /// Edit a domain's XML with $VISUAL or $EDITOR and define the result.
    Edit(lifecycle::DomArgs),
    /// List domains.
    List(info::ListArgs),
    /// A domain's basic information.
    Dominfo(info::DomJsonArgs),
    /// A domain's state.
    Domstate(info::DomstateArgs),
    /// A domain's XML.
    Dumpxml(info::DumpxmlArgs),
    /// A domain's numeric id ("-" when not running).
    Domid(info::DomJsonArgs),
    /// A domain's UUID.
    Domuuid(info::DomJsonArgs),
    /// A domain's name.
    Domname(info::DomJsonArgs),
    /// A domain's counters (the VMM's own).
    Domstats(info::DomstatsArgs),
    /// Attach a disk.
    AttachDisk(devices::AttachDiskArgs),
    /// Detach a disk.
    DetachDisk(devices::DetachDiskArgs),
    /// Attach a network interface.
    AttachInterface(devices::AttachInterfaceArgs),
    /// Detach a network interface.
    DetachInterface(devices::DetachInterfaceArgs),
    /// A domain's disks.
    Domblklist(devices::DomblklistArgs),
    /// A domain's network interfaces.
    Domiflist(info::DomJsonArgs),
    /// A network interface's rate limits, read or changed.
    Domiftune(iftune::DomiftuneArgs),
    /// Change the memory a running guest keeps (its balloon's target), or
    /// its currentMemory.
    Setmem(tuning::SetmemArgs),
    /// A domain's balloon and the guest's memory statistics.
    Dommemstat(tuning::DomReadArgs),
    /// Where each vCPU runs and may run.
    Vcpuinfo(tuning::DomReadArgs),
    /// Show or set the host CPUs a vCPU may run on.
    Vcpupin(tuning::VcpupinArgs),
    /// Show or set the host CPUs of the threads that are not vCPUs.
    Emulatorpin(tuning::EmulatorpinArgs),
    /// Show or set the host NUMA policy of a domain's memory.
    Numatune(tuning::NumatuneArgs),
    /// Show or set a domain's CPU shares and bandwidth (its cgroup).
    Schedinfo(limits::SchedinfoArgs),
    /// Show or set a domain's memory limits (its cgroup).
    Memtune(limits::MemtuneArgs),
    /// Show or set a domain's block I/O weight and throttles (its cgroup).
    Blkiotune(limits::BlkiotuneArgs),
    /// Connect to a domain's serial console (Ctrl-] detaches).
    Console(console::ConsoleArgs),
    /// Wait for domain events and print them.
    Event(events::EventArgs),
    /// The versions of the client, the daemon and its drivers.
    Version(host::VersionArgs),
    /// The connection URI in use.
    Uri,
    /// The daemon host's name.
    Hostname(host::JsonArgs),
    /// The daemon host's CPUs and memory.
    Nodeinfo(host::JsonArgs),
    /// The daemon host's capabilities (libvirt's capabilities XML).
    Capabilities(host::JsonArgs),
    /// The addresses a running domain's interfaces got from their
    /// networks' DHCP servers.
    Domifaddr(net::DomifaddrArgs),
    /// Define (or update) a persistent network from an XML file.
    NetDefine(net::NetFileArgs),
    /// Remove a network's definition (an active one becomes transient).
    NetUndefine(net::NetArgs),
    /// Create and start a transient network from an XML file.
    NetCreate(net::NetFileArgs),
    /// Start a defined network.
    NetStart(net::NetArgs),
    /// Stop a network and remove what it made on the host.
    NetDestroy(net::NetDestroyArgs),
    /// List networks.
    NetList(net::NetListArgs),
    /// A network's basic information.
    NetInfo(net::NetJsonArgs),
    /// A network's XML.
    NetDumpxml(net::NetDumpxmlArgs),
    /// Edit a network's XML with $VISUAL or $EDITOR and define the result.
    NetEdit(net::NetArgs),
    /// Start a network with the daemon (or no longer, with --disable).
    NetAutostart(net::NetAutostartArgs),
    /// A network's DHCP leases.
    NetDhcpLeases(net::NetLeasesArgs),
    /// Add, delete or modify a DHCP host of a network.
    NetUpdate(net::NetUpdateArgs),
    /// Define (or update) a persistent storage pool from an XML file.
    PoolDefine(pool::PoolFileArgs),
    /// Define a storage pool from its type and source, as virsh builds it.
    PoolDefineAs(pool::PoolDefineAsArgs),
    /// Create and start a transient storage pool from an XML file.
    PoolCreate(pool::PoolFileArgs),
    /// Make what a storage pool lives on: its directory, filesystem or label.
    PoolBuild(pool::PoolBuildArgs),
    /// Start a storage pool.
    PoolStart(pool::PoolArgs),
    /// Stop a storage pool (its volumes stay).
    PoolDestroy(pool::PoolArgs),
    /// Remove an inactive storage pool's (empty) directory.
    PoolDelete(pool::PoolArgs),
    /// Remove a storage pool's definition.
    PoolUndefine(pool::PoolArgs),
    /// Look at a storage pool again.
    PoolRefresh(pool::PoolArgs),
    /// Start a storage pool with the daemon (or no longer, with --disable).
    PoolAutostart(pool::PoolAutostartArgs),
    /// List storage pools.
    PoolList(pool::PoolListArgs),
    /// A storage pool's state and space.
    PoolInfo(pool::PoolJsonArgs),
    /// A storage pool's XML.
    PoolDumpxml(pool::PoolDumpxmlArgs),
    /// Edit a storage pool's XML with $VISUAL or $EDITOR and define the result.
    PoolEdit(pool::PoolArgs),
    /// Create a volume from an XML file.
    VolCreate(pool::VolCreateArgs),
    /// Create a volume from its name and size.
    VolCreateAs(pool::VolCreateAsArgs),
    /// List a pool's volumes.
    VolList(pool::VolListArgs),
    /// A volume's type and sizes.
    VolInfo(pool::VolArgs),
    /// A volume's XML.
    VolDumpxml(pool::VolArgs),
    /// A volume's path.
    VolPath(pool::VolArgs),
    /// A volume's key (its path).
    VolKey(pool::VolArgs),
    /// Delete a volume no running domain uses.
    VolDelete(pool::VolArgs),
    /// Change a volume's size (smaller only with --shrink).
    VolResize(pool::VolResizeArgs),
    /// Create a volume from an XML file with a copy of another volume's data.
    VolCreateFrom(vol_ops::VolCreateFromArgs),
    /// Copy a volume into a new one in the same pool.
    VolClone(vol_ops::VolCloneArgs),
    /// Overwrite a volume with zeroes.
    VolWipe(vol_ops::VolWipeArgs),
    /// Write a local file's bytes into a volume.
    VolUpload(vol_ops::VolTransferArgs),
    /// Save a volume's bytes into a local file.
    VolDownload(vol_ops::VolTransferArgs),
    /// Define (or update) a secret from an XML file (its value is set apart).
    SecretDefine(secret::SecretFileArgs),
    /// Remove a secret and its value.
    SecretUndefine(secret::SecretArgs),
    /// List secrets (never their values).
    SecretList(secret::SecretListArgs),
    /// A secret's XML (never its value).
    SecretDumpxml(secret::SecretDumpxmlArgs),
    /// Set a secret's value.
    SecretSetValue(secret::SecretSetValueArgs),
    /// A secret's value, in base64 (refused for a private secret).
    SecretGetValue(secret::SecretGetValueArgs),
    /// Define (or update) a host interface from an XML file.
    IfaceDefine(iface::IfaceFileArgs),
    /// Remove a host interface's definition.
    IfaceUndefine(iface::IfaceArgs),
    /// Make a host interface on the host and bring it up.
    IfaceStart(iface::IfaceArgs),
    /// Take a host interface down, undoing what its start made.
    IfaceDestroy(iface::IfaceArgs),
    /// List host interfaces.
    IfaceList(iface::IfaceListArgs),
    /// A host interface's XML.
    IfaceDumpxml(iface::IfaceDumpxmlArgs),
    /// Edit a host interface's XML with $VISUAL or $EDITOR and define the result.
    IfaceEdit(iface::IfaceArgs),
    /// A host interface's MAC address.
    IfaceMac(iface::IfaceJsonArgs),
    /// The host interface with a MAC address.
    IfaceName(iface::IfaceNameArgs),
}

/// Why a verb failed: one line, printed after `error: `.
#[derive(Debug)]
pub struct Failure(pub String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.to_string())
    }
}

/// What a verb prints on success.
#[derive(Debug, Default)]
pub struct Output {
    /// The text (each line with its newline).
    pub text: String,
    /// JSON: printed as is, without virsh's closing blank line.
    pub json: bool,
}

impl Output {
    /// Human output.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            json: false,
        }
    }

    /// One line of human output.
    pub fn line(line: impl std::fmt::Display) -> Self {
        Self::text(format!("{line}\n"))
    }

    /// JSON output (a newline is added).
    pub fn json(json: impl Into<String>) -> Self {
        let mut text = json.into();
        text.push('\n');
        Self { text, json: true }
    }
}

/// Run a verb against the daemon `connect` (or the default URI) names.
pub fn virsh_command(connect: Option<&str>, command: VirshCommand) -> ExitCode {
    let json = wants_json(&command);
    let result = ConnectUri::resolve(connect)
        .map_err(Failure::from)
        .and_then(|uri| Ok(Client::new(uri).timeout(answer_timeout()?)))
        .and_then(|client| run(client, command));
    match result {
        Ok(out) => {
            let mut text = out.text;
            if !out.json {
                text.push('\n');
            }
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            if !json {
                print_out("\n");
            }
            ExitCode::from(1)
        }
    }
}

/// The environment variable bounding each answer's wait, in seconds.
pub const TIMEOUT_ENV: &str = "VIREO_TIMEOUT";

/// How long to wait for each answer: `VIREO_TIMEOUT` seconds, else the
/// client's default.
fn answer_timeout() -> Result<std::time::Duration, Failure> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(manager::client::DEFAULT_TIMEOUT),
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0 && n <= manager::client::MAX_TIMEOUT_SECS)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| {
                Failure(format!(
                    "{TIMEOUT_ENV}='{s}': expected a whole number of seconds, 1 to {}",
                    manager::client::MAX_TIMEOUT_SECS
                ))
            }),
    }
}

/// Write to stdout; a reader that went away (`| head`) is not an error.
pub fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Print a define warning as virsh users expect it.
pub fn warn(line: &str) {
    eprintln!("warning: {line}");
}

fn wants_json(c: &VirshCommand) -> bool {
    use VirshCommand as V;
    match c {
        V::List(a) => a.json,
        V::Dominfo(a) | V::Domid(a) | V::Domuuid(a) | V::Domname(a) | V::Domiflist(a) => a.json,
        V::Domstate(a) => a.json,
        V::Dumpxml(a) => a.json,
        V::Domstats(a) => a.json,
        V::Domblklist(a) => a.json,
        V::Event(a) => a.json,
        V::Version(a) => a.json,
        V::Hostname(a) | V::Nodeinfo(a) | V::Capabilities(a) => a.json,
        V::Domifaddr(a) => a.json,
        V::NetList(a) => a.json,
        V::NetInfo(a) => a.json,
        V::NetDumpxml(a) => a.json,
        V::NetDhcpLeases(a) => a.json,
        V::PoolList(a) => a.json,
        V::PoolInfo(a) => a.json,
        V::PoolDumpxml(a) => a.json,
        V::VolList(a) => a.json,
        V::VolInfo(a) | V::VolDumpxml(a) | V::VolPath(a) | V::VolKey(a) => a.json,
        V::VolCreateFrom(a) => a.json,
        V::VolClone(a) => a.json,
        V::VolWipe(a) => a.json,
        V::VolUpload(a) | V::VolDownload(a) => a.json,
        V::SecretList(a) => a.json,
        V::SecretDumpxml(a) => a.json,
        V::SecretGetValue(a) => a.json,
        V::IfaceList(a) => a.json,
        V::IfaceDumpxml(a) => a.json,
        V::IfaceMac(a) => a.json,
        V::IfaceName(a) => a.json,
        V::Dommemstat(a) | V::Vcpuinfo(a) => a.json,
        V::Vcpupin(a) => a.json,
        V::Emulatorpin(a) => a.json,
        V::Numatune(a) => a.json,
        V::Schedinfo(a) => a.json,
        V::Memtune(a) => a.json,
        V::Blkiotune(a) => a.json,
        _ => false,
    }
}

fn run(mut client: Client, command: VirshCommand) -> Result<Output, Failure> {
    use VirshCommand as V;
    let c = &mut client;
    match command {
        V::Define(a) => lifecycle::define(c, &a),
        V::Undefine(a) => lifecycle::undefine(c, &a),
        V::Create(a) => lifecycle::create(c, &a),
        V::Start(a) => lifecycle::start(c, &a),
        V::Shutdown(a) => lifecycle::simple(c, &a, lifecycle::Simple::Shutdown),
        V::Destroy(a) => lifecycle::destroy(c, &a),
        V::Reboot(a) => lifecycle::simple(c, &a, lifecycle::Simple::Reboot),
        V::Reset(a) => lifecycle::simple(c, &a, lifecycle::Simple::Reset),
        V::Suspend(a) => lifecycle::simple(c, &a, lifecycle::Simple::Suspend),
        V::Resume(a) => lifecycle::simple(c, &a, lifecycle::Simple::Resume),
        V::Autostart(a) => lifecycle::autostart(c, &a),
        V::Edit(a) => edit::edit(c, &a),
        V::List(a) => info::list(c, &a),
        V::Dominfo(a) => info::dominfo(c, &a),
        V::Domstate(a) => info::domstate(c, &a),
        V::Dumpxml(a) => info::dumpxml(c, &a),
        V::Domid(a) => info::domid(c, &a),
        V::Domuuid(a) => info::domuuid(c, &a),
        V::Domname(a) => info::domname(c, &a),
        V::Domstats(a) => info::domstats(c, &a),
        V::AttachDisk(a) => devices::attach_disk(c, &a),
        V::DetachDisk(a) => devices::detach_disk(c, &a),
        V::AttachInterface(a) => devices::attach_interface(c, &a),
        V::DetachInterface(a) => devices::detach_interface(c, &a),
        V::Domblklist(a) => devices::domblklist(c, &a),
        V::Domiflist(a) => devices::domiflist(c, &a),
        V::Domiftune(a) => iftune::domiftune(c, &a),
        V::Setmem(a) => tuning::setmem(c, &a),
        V::Dommemstat(a) => tuning::dommemstat(c, &a),
        V::Vcpuinfo(a) => tuning::vcpuinfo(c, &a),
        V::Vcpupin(a) => tuning::vcpupin(c, &a),
        V::Emulatorpin(a) => tuning::emulatorpin(c, &a),
        V::Numatune(a) => tuning::numatune(c, &a),
        V::Schedinfo(a) => limits::schedinfo(c, &a),
        V::Memtune(a) => limits::memtune(c, &a),
        V::Blkiotune(a) => limits::blkiotune(c, &a),
        V::Console(a) => console::console(c, &a),
        V::Event(a) => events::event(c, &a),
        V::Version(a) => host::version(c, &a),
        V::Uri => Ok(Output::line(&c.uri().text)),
        V::Hostname(a) => host::hostname(c, &a),
        V::Nodeinfo(a) => host::nodeinfo(c, &a),
        V::Capabilities(a) => host::capabilities(c, &a),
        V::Domifaddr(a) => net::domifaddr(c, &a),
        V::NetDefine(a) => net::define(c, &a),
        V::NetUndefine(a) => net::undefine(c, &a),
        V::NetCreate(a) => net::create(c, &a),
        V::NetStart(a) => net::start(c, &a),
        V::NetDestroy(a) => net::destroy(c, &a),
        V::NetList(a) => net::list(c, &a),
        V::NetInfo(a) => net::info(c, &a),
        V::NetDumpxml(a) => net::dumpxml(c, &a),
        V::NetEdit(a) => net::edit(c, &a),
        V::NetAutostart(a) => net::autostart(c, &a),
        V::NetDhcpLeases(a) => net::leases(c, &a),
        V::NetUpdate(a) => net::update(c, &a),
        V::PoolDefine(a) => pool::define(c, &a),
        V::PoolDefineAs(a) => pool::define_as(c, &a),
        V::PoolCreate(a) => pool::create(c, &a),
        V::PoolBuild(a) => pool::build(c, &a),
        V::PoolStart(a) => pool::action(c, &a, "start"),
        V::PoolDestroy(a) => pool::action(c, &a, "destroy"),
        V::PoolDelete(a) => pool::action(c, &a, "delete"),
        V::PoolUndefine(a) => pool::action(c, &a, "undefine"),
        V::PoolRefresh(a) => pool::action(c, &a, "refresh"),
        V::PoolAutostart(a) => pool::autostart(c, &a),
        V::PoolList(a) => pool::list(c, &a),
        V::PoolInfo(a) => pool::info(c, &a),
        V::PoolDumpxml(a) => pool::dumpxml(c, &a),
        V::PoolEdit(a) => pool::edit(c, &a),
        V::VolCreate(a) => pool::vol_create(c, &a),
        V::VolCreateAs(a) => pool::vol_create_as(c, &a),
        V::VolList(a) => pool::vol_list(c, &a),
        V::VolInfo(a) => pool::vol_info(c, &a),
        V::VolDumpxml(a) => pool::vol_dumpxml(c, &a),
        V::VolPath(a) | V::VolKey(a) => pool::vol_path(c, &a),
        V::VolDelete(a) => pool::vol_delete(c, &a),
        V::VolResize(a) => pool::vol_resize(c, &a),
        V::VolCreateFrom(a) => vol_ops::create_from(c, &a),
        V::VolClone(a) => vol_ops::clone(c, &a),
        V::VolWipe(a) => vol_ops::wipe(c, &a),
        V::VolUpload(a) => vol_ops::upload(c, &a),
        V::VolDownload(a) => vol_ops::download(c, &a),
        V::SecretDefine(a) => secret::define(c, &a),
        V::SecretUndefine(a) => secret::undefine(c, &a),
        V::SecretList(a) => secret::list(c, &a),
        V::SecretDumpxml(a) => secret::dumpxml(c, &a),
        V::SecretSetValue(a) => secret::set_value(c, &a),
        V::SecretGetValue(a) => secret::get_value(c, &a),
        V::IfaceDefine(a) => iface::define(c, &a),
        V::IfaceUndefine(a) => iface::undefine(c, &a),
        V::IfaceStart(a) => iface::start(c, &a),
        V::IfaceDestroy(a) => iface::destroy(c, &a),
        V::IfaceList(a) => iface::list(c, &a),
        V::IfaceDumpxml(a) => iface::dumpxml(c, &a),
        V::IfaceEdit(a) => iface::edit(c, &a),
        V::IfaceMac(a) => iface::mac(c, &a),
        V::IfaceName(a) => iface::name(c, &a),
    }
}

/// The name virsh prints for `dom`: the argument itself when it can only
/// be a name, else the daemon's answer (an id or UUID was given).
pub fn name_of(client: &mut Client, dom: &str) -> Result<String, Failure> {
    if looks_like_id_or_uuid(dom) {
        Ok(client.info(dom)?.value.summary.name)
    } else {
        Ok(dom.to_string())
    }
}

/// All digits (an id), or a UUID's 32 hex digits with or without dashes:
/// what the daemon looks up before names.
fn looks_like_id_or_uuid(s: &str) -> bool {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_uuids_are_looked_up() {
        assert!(looks_like_id_or_uuid("12"));
        assert!(looks_like_id_or_uuid(
            "6695eb01-f6a4-8304-79aa-97f2502e193f"
        ));
        assert!(looks_like_id_or_uuid("6695eb01f6a4830479aa97f2502e193f"));
        assert!(!looks_like_id_or_uuid("web-1"));
        assert!(!looks_like_id_or_uuid(""));
        assert!(!looks_like_id_or_uuid("12a"));
    }
}
