//! A disk's `type='network'` source: an iSCSI LUN (`protocol='iscsi'`,
//! `name='IQN/LUN'`) or a file on an NFS export (`protocol='nfs'`,
//! `name='EXPORT/PATH'`, with `identity user= group=`), each at one
//! `host`. The VMM reaches both itself (libiscsi, libnfs), as QEMU's
//! iscsi and nfs block drivers do; the source's URL is what it opens.

use crate::auth::{AuthPlace, ChapAuth};
use crate::error::Error;
use crate::node::{Ctx, Node};
use crate::raw::XmlWriter;

/// The iSCSI port when `<host>` names none.
pub const ISCSI_PORT: u16 = 3260;

/// Which network protocol reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkProtocol {
    /// An iSCSI LUN.
    Iscsi,
    /// A file on an NFS export.
    Nfs,
}

impl NetworkProtocol {
    /// libvirt's name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkProtocol::Iscsi => "iscsi",
            NetworkProtocol::Nfs => "nfs",
        }
    }
}

/// The credentials an NFS disk presents to its server (AUTH_SYS),
/// libvirt's `<identity user='+UID' group='+GID'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfsIdentity {
    /// User ID.
    pub uid: Option<u32>,
    /// Group ID.
    pub gid: Option<u32>,
}

/// A network disk's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSource {
    /// The protocol.
    pub protocol: NetworkProtocol,
    /// iSCSI: the target's IQN. NFS: the file's path on the server, its
    /// export included (`EXPORT/PATH`, as written).
    pub target: String,
    /// iSCSI: the LUN (0 for NFS).
    pub lun: u16,
    /// The server's host name or address.
    pub host: String,
    /// The server's port, when given (iSCSI: 3260 otherwise; NFS: the
    /// portmapper is asked otherwise).
    pub port: Option<u16>,
    /// NFS: the identity presented to the server, when given.
    pub identity: Option<NfsIdentity>,
    /// iSCSI: the CHAP credentials (`<auth>`, in the source or the disk).
    pub auth: Option<ChapAuth>,
    /// `iscsi://HOST:PORT/IQN/LUN` or `nfs://HOST[:PORT]/EXPORT/PATH`,
    /// what the drivers open.
    pub url: String,
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl NetworkSource {
    /// The source of the LUN `lun` of `target` at `host[:port]`.
    pub fn iscsi(target: &str, lun: u16, host: &str, port: Option<u16>) -> Self {
        let p = port.unwrap_or(ISCSI_PORT);
        Self {
            protocol: NetworkProtocol::Iscsi,
            target: target.to_string(),
            lun,
            host: host.to_string(),
            port,
            identity: None,
            auth: None,
            url: format!("iscsi://{}:{p}/{target}/{lun}", bracketed(host)),
        }
    }

    /// The source of the file `path` (`EXPORT/PATH`) on the NFS server at
    /// `host[:port]`.
    pub fn nfs(path: &str, host: &str, port: Option<u16>, identity: Option<NfsIdentity>) -> Self {
        let mut url = format!("nfs://{}", bracketed(host));
        if let Some(p) = port {
            url.push_str(&format!(":{p}"));
        }
        url.push('/');
        url.push_str(path.trim_start_matches('/'));
        let mut args = Vec::new();
        if let Some(uid) = identity.and_then(|i| i.uid) {
            args.push(format!("uid={uid}"));
        }
        if let Some(gid) = identity.and_then(|i| i.gid) {
            args.push(format!("gid={gid}"));
        }
        if !args.is_empty() {
            url.push('?');
            url.push_str(&args.join("&"));
        }
        Self {
            protocol: NetworkProtocol::Nfs,
            target: path.to_string(),
            lun: 0,
            host: host.to_string(),
            port,
            identity,
            auth: None,
            url,
        }
    }

    /// `source protocol= name=` and its one `host` (and, for NFS, its
    /// `identity`).
    pub(crate) fn parse(c: &Node<'_>, ctx: &mut Ctx) -> Result<Self, Error> {
        c.check_attrs(ctx, &["protocol", "name"]);
        let protocol = match c.need("protocol")? {
            "iscsi" => NetworkProtocol::Iscsi,
            "nfs" => NetworkProtocol::Nfs,
            other => {
                return Err(c.refuse(format!(
                    "network disk protocol '{other}' is not supported: Vireo reaches iSCSI targets \
                     (protocol='iscsi') and NFS exports (protocol='nfs')"
                )))
            }
        };
        let name = c.need("name")?;
        let mut host = None;
        let mut identity = None;
        let mut auth = None;
        for child in c.children() {
            let h = child.node();
            match h.name() {
                "host" => {
                    if host.is_some() {
                        return Err(h.refuse("Vireo reaches a server through one <host>; give one"));
                    }
                    host = Some(parse_host(&h, ctx, protocol)?);
                }
                "auth" if protocol == NetworkProtocol::Iscsi => {
                    h.once(&auth)?;
                    auth = Some(ChapAuth::parse(&h, ctx, AuthPlace::Disk)?);
                }
                "identity" if protocol == NetworkProtocol::Nfs => {
                    h.leaf(ctx, &["user", "group"])?;
                    identity = Some(NfsIdentity {
                        uid: h
                            .attr("user")
                            .map(|u| numeric_id(&h, "user", u))
                            .transpose()?,
                        gid: h
                            .attr("group")
                            .map(|g| numeric_id(&h, "group", g))
                            .transpose()?,
                    });
                }
                other => {
                    return Err(h.refuse(format!(
                        "<{other}> in a {} disk's source is not supported",
                        protocol.as_str()
                    )))
                }
            }
        }
        let (hn, port) =
            host.ok_or_else(|| c.refuse("the network disk names no <host name=...>"))?;
        match protocol {
            NetworkProtocol::Iscsi => {
                let (iqn, lun) = parse_iqn_lun(name).ok_or_else(|| {
                    c.refuse(format!(
                        "name='{}' must be the target's IQN and the LUN, as IQN/LUN",
                        name.escape_debug()
                    ))
                })?;
                let mut source = Self::iscsi(iqn, lun, &hn, port);
                source.auth = auth;
                Ok(source)
            }
            NetworkProtocol::Nfs => {
                if !nfs_path_ok(name) {
                    return Err(c.refuse(format!(
                        "name='{}' must be the file's path on the server, as EXPORT/PATH \
                         (no '..', spaces, commas, '?' or '#')",
                        name.escape_debug()
                    )));
                }
                Ok(Self::nfs(name, &hn, port, identity))
            }
        }
    }

    /// The `<source>` element.
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let name = match self.protocol {
            NetworkProtocol::Iscsi => format!("{}/{}", self.target, self.lun),
            NetworkProtocol::Nfs => self.target.clone(),
        };
        w.open(
            "source",
            &[("protocol", self.protocol.as_str()), ("name", &name)],
        );
        let port = self.port.map(|p| p.to_string());
        let mut host = vec![("name", self.host.as_str())];
        if let Some(p) = &port {
            host.push(("port", p));
        }
        w.empty("host", &host);
        if let Some(id) = self.identity {
            let user = id.uid.map(|u| format!("+{u}"));
            let group = id.gid.map(|g| format!("+{g}"));
            let mut attrs = Vec::new();
            if let Some(u) = &user {
                attrs.push(("user", u.as_str()));
            }
            if let Some(g) = &group {
                attrs.push(("group", g.as_str()));
            }
            w.empty("identity", &attrs);
        }
        if let Some(a) = &self.auth {
            a.write(w, AuthPlace::Disk);
        }
        w.close("source");
    }
}

/// `<host name= port= transport=>`: the name and port.
fn parse_host(
    h: &Node<'_>,
    ctx: &mut Ctx,
    protocol: NetworkProtocol,
) -> Result<(String, Option<u16>), Error> {
    h.leaf(ctx, &["name", "port", "transport"])?;
    if let Some(t) = h.attr("transport").filter(|t| *t != "tcp") {
        return Err(h.refuse(format!(
            "transport '{t}' is not supported: {} runs over tcp",
            match protocol {
                NetworkProtocol::Iscsi => "iSCSI",
                NetworkProtocol::Nfs => "NFS",
            }
        )));
    }
    let hn = h.need("name")?;
    let ok_host = !hn.is_empty()
        && hn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    if !ok_host {
        return Err(h.refuse(format!(
            "host name '{}' is not a host name or address",
            hn.escape_debug()
        )));
    }
    let port =
        match h.attr("port") {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                h.refuse(format!("port '{}' is not a TCP port", p.escape_debug()))
            })?),
        };
    Ok((hn.to_string(), port))
}

/// `IQN/LUN`.
fn parse_iqn_lun(name: &str) -> Option<(&str, u16)> {
    let (iqn, lun) = name.rsplit_once('/')?;
    let ok = !iqn.is_empty() && !iqn.contains('/') && iqn.chars().all(|ch| ch.is_ascii_graphic());
    let lun = lun.parse::<u16>().ok().filter(|l| *l < 16384)?;
    ok.then_some((iqn, lun))
}

/// `EXPORT/PATH`: a file's path, which becomes part of an `nfs://` URL.
fn nfs_path_ok(name: &str) -> bool {
    let path = name.trim_start_matches('/');
    !path.is_empty()
        && !path.ends_with('/')
        && path.split('/').all(|c| !c.is_empty() && c != "..")
        && path
            .chars()
            .all(|ch| ch.is_ascii_graphic() && !",?#&".contains(ch))
}

/// libvirt's `+N` (or plain `N`) for a numeric ID; names are refused
/// (the server knows IDs, and this host's names need not match its).
fn numeric_id(h: &Node<'_>, what: &str, v: &str) -> Result<u32, Error> {
    v.strip_prefix('+')
        .unwrap_or(v)
        .parse::<u32>()
        .map_err(|_| {
            h.refuse(format!(
                "{what}='{}' is not supported: give a numeric ID as '+N'",
                v.escape_debug()
            ))
        })
}

#[cfg(test)]
mod tests {
    use crate::devices::disk::{Disk, DiskSource};
    use crate::error::Error;
    use crate::node::{Ctx, Node};
    use crate::raw::XmlWriter;
    use crate::tree::read;

    fn disk(xml: &str) -> Result<Disk, Error> {
        let el = read(xml).unwrap();
        crate::devices::disk::parse_disk(
            &Node::root(&el, "/domain/devices/disk[1]"),
            &mut Ctx::default(),
        )
    }

    fn refused(xml: &str) -> String {
        disk(xml).unwrap_err().to_string()
    }

    #[test]
    fn iscsi_network_disks() {
        let d = disk(
            "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/1'><host name='169.254.77.1' port='3260'/></source>\
             <target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        let DiskSource::Network(n) = &d.source else {
            panic!("{:?}", d.source)
        };
        assert_eq!(
            (n.target.as_str(), n.lun, n.port),
            ("iqn.2026-01.org.vireo:t1", 1, Some(3260))
        );
        assert_eq!(
            d.source.host_path(),
            Some("iscsi://169.254.77.1:3260/iqn.2026-01.org.vireo:t1/1")
        );
        assert!(d.source.is_network() && !d.source.is_block());
        assert_eq!(d.source.kind(), "network");
        let mut w = XmlWriter::default();
        d.write(&mut w);
        let xml = w.finish();
        assert!(xml.contains("<disk type='network' device='disk'>"), "{xml}");
        assert!(
            xml.contains("<source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/1'>"),
            "{xml}"
        );
        assert!(
            xml.contains("<host name='169.254.77.1' port='3260'/>"),
            "{xml}"
        );
        // Read back, the same disk.
        assert_eq!(disk(&xml).unwrap(), d);
        let v6 = disk(
            "<disk type='network'><driver type='raw'/><source protocol='iscsi' name='iqn.x:y/0'>\
             <host name='fe80::1'/></source><target dev='vdb'/></disk>",
        )
        .unwrap();
        assert_eq!(
            v6.source.host_path(),
            Some("iscsi://[fe80::1]:3260/iqn.x:y/0")
        );
        let e = refused(
            "<disk type='network'><driver type='raw'/><source protocol='nbd' name='x'>\
             <host name='h'/></source><target dev='vda'/></disk>",
        );
        assert!(e.contains("protocol 'nbd' is not supported"), "{e}");
        for (bad, says) in [
            ("<source protocol='iscsi' name='iqn.x:y'><host name='h'/></source>", "IQN/LUN"),
            ("<source protocol='iscsi' name='iqn.x:y/x'><host name='h'/></source>", "IQN/LUN"),
            ("<source protocol='iscsi' name='iqn.x:y/1'/>", "no <host"),
            ("<source protocol='iscsi' name='iqn.x:y/1'><host name='h' port='0'/></source>", "TCP port"),
            ("<source protocol='iscsi' name='iqn.x:y/1'><host name='a'/><host name='b'/></source>", "one <host>"),
            ("<source protocol='iscsi' name='iqn.x:y/1'><host name='h' transport='rdma'/></source>", "tcp"),
            ("<source protocol='iscsi' name='iqn.x:y/1'><host name='h'/><auth username='u'/></source>", "needs a <secret"),
            ("<source protocol='iscsi' name='iqn.x:y/1'><host name='h'/><auth username='u'><secret type='ceph' usage='s'/></auth></source>", "secret type 'ceph'"),
        ] {
            let xml = format!("<disk type='network'><driver type='raw'/>{bad}<target dev='vda'/></disk>");
            let e = refused(&xml);
            assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn nfs_network_disks() {
        let d = disk(
            "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='nfs' name='srv/vm/disk.img'><host name='169.254.78.1' port='2049'/></source>\
             <target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        assert_eq!(
            d.source.host_path(),
            Some("nfs://169.254.78.1:2049/srv/vm/disk.img")
        );
        assert!(d.source.is_network());
        let mut w = XmlWriter::default();
        d.write(&mut w);
        let xml = w.finish();
        assert!(
            xml.contains("<source protocol='nfs' name='srv/vm/disk.img'>"),
            "{xml}"
        );
        assert_eq!(disk(&xml).unwrap(), d);
        // A leading slash, no port, an identity.
        let d = disk(
            "<disk type='network'><driver type='raw'/><source protocol='nfs' name='/e/f.img'>\
             <host name='fe80::1'/><identity user='+0' group='+107'/></source><target dev='vdb'/></disk>",
        )
        .unwrap();
        assert_eq!(
            d.source.host_path(),
            Some("nfs://[fe80::1]/e/f.img?uid=0&gid=107")
        );
        let mut w = XmlWriter::default();
        d.write(&mut w);
        let xml = w.finish();
        assert!(xml.contains("<identity user='+0' group='+107'/>"), "{xml}");
        assert_eq!(disk(&xml).unwrap(), d);
        for (bad, says) in [
            ("<source protocol='nfs' name='e/../f'><host name='h'/></source>", "EXPORT/PATH"),
            ("<source protocol='nfs' name='e/f,x'><host name='h'/></source>", "EXPORT/PATH"),
            ("<source protocol='nfs' name='e/'><host name='h'/></source>", "EXPORT/PATH"),
            ("<source protocol='nfs' name='e/f'/>", "no <host"),
            ("<source protocol='nfs' name='e/f'><host name='h' transport='rdma'/></source>", "NFS runs over tcp"),
            ("<source protocol='nfs' name='e/f'><host name='h'/><identity user='qemu'/></source>", "numeric"),
            ("<source protocol='nfs' name='e/f'><host name='h'/><auth username='u'/></source>", "<auth>"),
        ] {
            let xml = format!("<disk type='network'><driver type='raw'/>{bad}<target dev='vda'/></disk>");
            let e = refused(&xml);
            assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    /// libvirt's two places for an iSCSI disk's `<auth>`: inside
    /// `<source>` (written back there) and as a child of `<disk>`.
    #[test]
    fn iscsi_disks_take_chap_auth_in_either_place() {
        use crate::auth::SecretRef;
        let inside = disk(
            "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/1'><host name='169.254.77.1'/>\
             <auth username='vireo'><secret type='iscsi' usage='san-chap'/></auth></source>\
             <target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        let a = inside.source.chap().unwrap();
        assert_eq!(a.username, "vireo");
        assert_eq!(a.secret, SecretRef::Usage("san-chap".into()));
        let mut w = XmlWriter::default();
        inside.write(&mut w);
        let xml = w.finish();
        assert!(
            xml.contains("<auth username='vireo'>")
                && xml.contains("<secret type='iscsi' usage='san-chap'/>"),
            "{xml}"
        );
        assert_eq!(disk(&xml).unwrap(), inside);
        // The URL carries no credentials.
        assert_eq!(
            inside.source.host_path(),
            Some("iscsi://169.254.77.1:3260/iqn.2026-01.org.vireo:t1/1")
        );
        let outside = disk(
            "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <auth username='vireo'><secret type='iscsi' usage='san-chap'/></auth>\
             <source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/1'><host name='169.254.77.1'/></source>\
             <target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        assert_eq!(outside, inside);
        let by_uuid = disk(
            "<disk type='network'><driver type='raw'/><auth username='u'>\
             <secret type='iscsi' uuid='c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6'/></auth>\
             <source protocol='iscsi' name='iqn.x:y/1'><host name='h'/></source><target dev='vda'/></disk>",
        )
        .unwrap();
        assert!(matches!(
            by_uuid.source.chap().unwrap().secret,
            SecretRef::Uuid(_)
        ));
        for (bad, says) in [
            (
                "<disk type='network'><driver type='raw'/><auth username='u'><secret type='iscsi' usage='s'/></auth>\
                 <source protocol='iscsi' name='iqn.x:y/1'><host name='h'/><auth username='u'><secret type='iscsi' usage='s'/></auth></source><target dev='vda'/></disk>",
                "both in <disk> and in <source>",
            ),
            (
                "<disk type='file'><driver type='raw'/><auth username='u'><secret type='iscsi' usage='s'/></auth>\
                 <source file='/x.img'/><target dev='vda'/></disk>",
                "not a file disk",
            ),
            (
                "<disk type='network'><driver type='raw'/><auth username='u'><secret type='iscsi' usage='s'/></auth>\
                 <source protocol='nfs' name='e/f'><host name='h'/></source><target dev='vda'/></disk>",
                "for iSCSI network disks",
            ),
        ] {
            let e = refused(bad);
            assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
