//! Giving up root: every capability (bounding set first, while that is
//! still allowed, then ambient, and after the id change whatever is left
//! in the permitted, effective and inheritable sets), supplementary
//! groups, the gid and uid (real, effective and saved), and finally
//! `no_new_privs`, so no exec could ever give any of it back.

use crate::{os_error, Error};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn prctl(what: &str, option: libc::c_int, arg: libc::c_ulong) -> Result<(), Error> {
    // SAFETY: these prctl options take integer arguments only.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } != 0 {
        return Err(os_error(what));
    }
    Ok(())
}

/// Empty the capability bounding set, while CAP_SETPCAP is still held.
///
/// The set limits only what an exec could grant, so the process keeps
/// the capabilities it has (to make the jail) and its children inherit the
/// empty set: [`crate::fork_keeper`] empties it once before the fork
/// instead of the keeper and the VMM each doing it (every drop is a new
/// set of credentials, about 1.5 µs each, 41 of them). A capability
/// already dropped is passed over: reading costs no new credentials.
pub(crate) fn drop_bounding_set() -> Result<(), Error> {
    // Both processes come here again from drop_all after the fork: 42
    // more reads each, for nothing (the flag is copied by the fork).
    if BOUNDING_SET_EMPTY.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    // EINVAL marks the first number past the kernel's last capability.
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_READ takes a capability number.
        match unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } {
            0 => continue,
            1 => {}
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
                && cap > 0 =>
            {
                break
            }
            _ => {
                return Err(os_error(format!(
                    "reading capability {cap} of the bounding set"
                )))
            }
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            return Err(os_error(format!(
                "dropping capability {cap} from the bounding set"
            )));
        }
    }
    BOUNDING_SET_EMPTY.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Set once this process's bounding set was emptied (it cannot grow back).
static BOUNDING_SET_EMPTY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Drop to `uid`/`gid` with nothing else (see the module's documentation).
pub(crate) fn drop_all(uid: u32, gid: u32) -> Result<(), Error> {
    drop_bounding_set()?;
    prctl(
        "clearing the ambient capabilities",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    // SAFETY: an empty list: no pointer is read.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(os_error("setgroups"));
    }
    // SAFETY: integer arguments only; one thread, so the libc wrapper's
    // cross-thread broadcast has nothing to do.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(os_error(format!("setresgid {gid}")));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(os_error(format!("setresuid {uid}")));
    }
    // Leaving uid 0 cleared the permitted and effective sets; clear the
    // inheritable one too.
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: a valid header and two data words, as version 3 reads.
    if unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } != 0 {
        return Err(os_error("capset"));
    }
    prctl("setting no_new_privs", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    verify(uid, gid)
}

/// Read back what was set: a drop that silently failed would be worse
/// than one that said so.
fn verify(uid: u32, gid: u32) -> Result<(), Error> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a valid header and two writable data words.
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
        return Err(os_error("capget"));
    }
    let any_cap = data
        .iter()
        .any(|d| d.effective | d.permitted | d.inheritable != 0);
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three writable ids.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: three writable ids.
    unsafe { libc::getresgid(&mut rg, &mut eg, &mut sg) };
    if any_cap || [r, e, s] != [uid; 3] || [rg, eg, sg] != [gid; 3] {
        return Err(Error::Setup {
            what: "checking the dropped privileges".into(),
            source: std::io::Error::other(format!(
                "uids {r}/{e}/{s}, gids {rg}/{eg}/{sg}, capabilities left: {any_cap}"
            )),
        });
    }
    Ok(())
}
