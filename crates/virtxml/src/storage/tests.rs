//! The storage XML against what libvirt and virsh write, and against
//! what must be refused.

use super::pool::{Pool, PoolSpace, PoolType};
use super::volume::{Volume, VolumeFormat, VolumeState};

fn refused(xml: &str) -> String {
    match Pool::parse(xml) {
        Ok(p) => panic!("accepted: {xml}\n{:?}", p.pool),
        Err(e) => e.to_string(),
    }
}

fn vol_refused(xml: &str) -> String {
    match Volume::parse(xml) {
        Ok(v) => panic!("accepted: {xml}\n{:?}", v.volume),
        Err(e) => e.to_string(),
    }
}

/// What `virsh pool-define-as --print-xml` writes for each type Vireo
/// takes is accepted without a warning.
#[test]
fn pool_define_as_output_is_accepted() {
    let cases = [
        (
            "<pool type='dir'>\n  <name>images</name>\n  <target>\n    <path>/var/lib/vireo/images</path>\n  </target>\n</pool>\n",
            PoolType::Dir,
        ),
        (
            "<pool type='fs'>\n  <name>fs1</name>\n  <source>\n    <device path='/dev/loop3'/>\n    <format type='ext4'/>\n  </source>\n  <target>\n    <path>/mnt/fs1</path>\n  </target>\n</pool>\n",
            PoolType::Fs,
        ),
        (
            "<pool type='netfs'>\n  <name>nfs1</name>\n  <source>\n    <host name='192.0.2.10'/>\n    <dir path='/export/images'/>\n    <format type='nfs'/>\n  </source>\n  <target>\n    <path>/mnt/nfs1</path>\n  </target>\n</pool>\n",
            PoolType::Netfs,
        ),
        (
            "<pool type='disk'>\n  <name>d1</name>\n  <source>\n    <device path='/dev/loop4'/>\n    <format type='gpt'/>\n  </source>\n  <target>\n    <path>/dev</path>\n  </target>\n</pool>\n",
            PoolType::Disk,
        ),
        (
            "<pool type='logical'>\n  <name>vg0</name>\n  <source>\n    <device path='/dev/vdb'/>\n    <name>vg0</name>\n    <format type='lvm2'/>\n  </source>\n  <target>\n    <path>/dev/vg0</path>\n  </target>\n</pool>\n",
            PoolType::Logical,
        ),
        (
            "<pool type='iscsi'>\n  <name>san</name>\n  <source>\n    <host name='192.0.2.20' port='3260'/>\n    <device path='iqn.2026-11.example.san:disks'/>\n  </source>\n  <target>\n    <path>/dev/disk/by-path</path>\n  </target>\n</pool>\n",
            PoolType::Iscsi,
        ),
        (
            "<pool type='iscsi-direct'>\n  <name>san2</name>\n  <source>\n    <host name='192.0.2.20'/>\n    <device path='iqn.2026-11.example.san:disks'/>\n    <initiator>\n      <iqn name='iqn.2026-11.example.host:vireo'/>\n    </initiator>\n  </source>\n</pool>\n",
            PoolType::IscsiDirect,
        ),
    ];
    for (xml, kind) in cases {
        let parsed = Pool::parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert_eq!(parsed.pool.kind, kind);
        // Written back (with an active pool's figures) and read again:
        // the same pool, still without a warning.
        let space = PoolSpace {
            capacity: 10 << 30,
            allocation: 1 << 30,
            available: 9 << 30,
        };
        let again = Pool::parse(&parsed.pool.to_xml(Some(space))).unwrap();
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        assert_eq!(again.pool, parsed.pool);
    }
}

#[test]
fn pool_details_are_read() {
    let p = Pool::parse(
        "<pool type='logical'><name>data</name>\
         <source><name>vg_data</name><device path='/dev/vdb'/><device path='/dev/vdc'/></source>\
         <target><path>/dev/vg_data/</path><permissions><mode>0750</mode><owner>0</owner><group>-1</group></permissions></target></pool>",
    )
    .unwrap()
    .pool;
    assert_eq!(p.volume_group(), "vg_data");
    assert_eq!(p.source.devices, ["/dev/vdb", "/dev/vdc"]);
    assert_eq!(p.target.path.as_deref(), Some("/dev/vg_data"));
    assert_eq!(p.target.permissions.mode, Some(0o750));
    assert_eq!(p.target.permissions.owner, Some(0));
    assert_eq!(p.target.permissions.group, None);
    let p = Pool::parse("<pool type='logical'><name>vg1</name></pool>")
        .unwrap()
        .pool;
    assert_eq!(p.volume_group(), "vg1");
}

#[test]
fn what_a_pool_cannot_be_is_refused_in_one_line() {
    for (xml, says) in [
        ("<pool type='rbd'><name>x</name></pool>", "pool type 'rbd' is not supported"),
        ("<pool><name>x</name></pool>", "needs a type="),
        ("<pool type='dir'><name>x</name></pool>", "needs <target><path>"),
        ("<pool type='dir'><name>a/b</name><target><path>/x</path></target></pool>", "contains '/'"),
        ("<pool type='dir'><name>x</name><target><path>images</path></target></pool>", "is not absolute"),
        ("<pool type='dir'><name>x</name><target><path>/a/../b</path></target></pool>", "'..'"),
        ("<pool type='dir'><name>x</name><source><device path='/dev/sda'/></source><target><path>/x</path></target></pool>", "takes no <source><device>"),
        ("<pool type='fs'><name>x</name><target><path>/x</path></target></pool>", "exactly one <source><device"),
        ("<pool type='fs'><name>x</name><source><device path='/dev/a'/><format type='ntfs'/></source><target><path>/x</path></target></pool>", "format 'ntfs' is not supported for a fs pool"),
        ("<pool type='netfs'><name>x</name><source><host name='h'/></source><target><path>/x</path></target></pool>", "needs <source><dir"),
        ("<pool type='netfs'><name>x</name><source><host name='h'/><dir path='/e'/><format type='glusterfs'/></source><target><path>/x</path></target></pool>", "format 'glusterfs'"),
        ("<pool type='netfs'><name>x</name><source><host name='h;rm'/><dir path='/e'/></source><target><path>/x</path></target></pool>", "is not a host name"),
        ("<pool type='disk'><name>x</name><source><device path='/dev/a'/><format type='dos'/></source></pool>", "format 'dos'"),
        ("<pool type='iscsi'><name>x</name><source><host name='h'/><device path='/dev/sda'/></source></pool>", "is not an iSCSI name"),
        ("<pool type='iscsi'><name>x</name><source><host name='h' port='0'/><device path='iqn.2026-01.a:b'/></source></pool>", "port 0"),
        ("<pool type='logical'><name>x</name><source><name>-bad</name></source></pool>", "is not one LVM takes"),
        ("<pool type='dir'><name>x</name><target><path>/x</path><permissions><label>l</label></permissions></target></pool>", "<label> is not supported"),
        ("<pool type='dir'><name>x</name><target><path>/x</path><permissions><mode>999</mode></permissions></target></pool>", "not an octal mode"),
        ("<pool type='dir'><name>x</name><target><path>/x</path></target><source/><source/></pool>", "more than once"),
    ] {
        let e = refused(xml);
        assert!(e.contains(says), "{xml}\n-> {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn pool_state_is_dropped_and_metadata_kept() {
    let parsed = Pool::parse(
        "<pool type='dir'><name>x</name><uuid>3e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid>\
         <capacity unit='bytes'>100</capacity><allocation>50</allocation><available unit='KiB'>1</available>\
         <target><path>/x</path></target><metadata><a xmlns='urn:a'/></metadata></pool>",
    )
    .unwrap();
    assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    assert_eq!(
        parsed.pool.uuid.to_string(),
        "3e3fce45-4f53-4fa7-bb32-11f34168b82b"
    );
    let xml = parsed.pool.to_xml(None);
    assert!(xml.contains("<metadata>"), "{xml}");
}

#[test]
fn volumes_as_vol_create_as_writes_them() {
    let v = Volume::parse(
        "<volume>\n  <name>web.qcow2</name>\n  <capacity unit='G'>10</capacity>\n  <allocation unit='bytes'>0</allocation>\n  <target>\n    <format type='qcow2'/>\n  </target>\n</volume>\n",
    )
    .unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let v = v.volume;
    assert_eq!(v.capacity, 10 << 30);
    assert_eq!(v.allocation, Some(0));
    assert_eq!(v.format, Some(VolumeFormat::Qcow2));

    // An overlay, as vol-create-as --backing-vol writes it.
    let o = Volume::parse(
        "<volume><name>o.qcow2</name><capacity>1048576</capacity>\
         <target><format type='qcow2'/><compat>1.1</compat></target>\
         <backingStore><path>/images/base.raw</path><format type='raw'/></backingStore></volume>",
    )
    .unwrap()
    .volume;
    assert_eq!(o.backing.as_ref().unwrap().format, VolumeFormat::Raw);
    let state = VolumeState {
        kind: "file",
        key: "/images/o.qcow2".into(),
        path: "/images/o.qcow2".into(),
        allocation: 4096,
        physical: 200_704,
    };
    // What vol-dumpxml prints defines the same volume again.
    let xml = o.to_xml(&state);
    assert!(xml.contains("<key>/images/o.qcow2</key>"), "{xml}");
    let again = Volume::parse(&xml).unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    // The reported allocation becomes the one asked for, as in libvirt.
    let mut expect = o.clone();
    expect.allocation = Some(4096);
    assert_eq!(again.volume, expect);
}

#[test]
fn what_a_volume_cannot_be_is_refused_in_one_line() {
    for (xml, says) in [
        ("<volume><name>a/b</name><capacity>1</capacity></volume>", "contains '/'"),
        ("<volume><name>..</name><capacity>1</capacity></volume>", "is not a volume name"),
        ("<volume><name>a</name></volume>", "has no <capacity>"),
        ("<volume><name>a</name><capacity>0</capacity></volume>", "capacity is zero"),
        ("<volume><name>a</name><capacity unit='ZiB'>1</capacity></volume>", "unknown unit"),
        ("<volume><name>a</name><capacity unit='EiB'>100</capacity></volume>", "more than 2^64"),
        ("<volume><name>a</name><capacity>1</capacity><allocation>2</allocation></volume>", "more than the capacity"),
        ("<volume><name>a</name><capacity>1</capacity><target><format type='vmdk'/></target></volume>", "format 'vmdk'"),
        ("<volume type='dir'><name>a</name><capacity>1</capacity></volume>", "volume type 'dir'"),
        ("<volume><name>a</name><capacity>1</capacity><encryption format='luks'/></volume>", "encrypted"),
        ("<volume><name>a</name><capacity>1</capacity><backingStore><path>/b</path><format type='raw'/></backingStore></volume>", "only a qcow2 volume is an overlay"),
        ("<volume><name>a</name><capacity>1</capacity><target><format type='qcow2'/></target><backingStore><path>/b</path></backingStore></volume>", "never probed"),
        ("<volume><name>a</name><capacity>1</capacity><target><format type='qcow2'/><compat>2</compat></target></volume>", "compat '2'"),
    ] {
        let e = vol_refused(xml);
        assert!(e.contains(says), "{xml}\n-> {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn iscsi_direct_pools_as_libvirt_and_virsh_write_them() {
    // libvirt's documented form.
    let p = Pool::parse(
        "<pool type='iscsi-direct'><name>san</name><source>\
         <host name='169.254.77.1' port='3260'/><device path='iqn.2026-01.org.vireo:t1'/>\
         <initiator><iqn name='iqn.2026-01.org.vireo:host'/></initiator></source></pool>",
    )
    .unwrap()
    .pool;
    assert_eq!(p.kind, PoolType::IscsiDirect);
    assert_eq!(p.source.devices, ["iqn.2026-01.org.vireo:t1"]);
    assert_eq!(
        p.source.initiator.as_deref(),
        Some("iqn.2026-01.org.vireo:host")
    );
    let host = p.source.host.as_ref().unwrap();
    assert_eq!(
        (host.name.as_str(), host.port),
        ("169.254.77.1", Some(3260))
    );
    // `virsh pool-define-as san iscsi-direct --source-host H --source-dev IQN
    // --print-xml`: no initiator (Vireo's default name is used).
    let p = Pool::parse(
        "<pool type='iscsi-direct'>\n  <name>san</name>\n  <source>\n    <host name='169.254.77.1'/>\n    \
         <device path='iqn.2026-01.org.vireo:t1'/>\n  </source>\n</pool>\n",
    )
    .unwrap()
    .pool;
    assert_eq!(p.source.initiator, None);
    assert!(p.source.host.as_ref().unwrap().port.is_none());
}

/// libvirt's CHAP form for an iscsi-direct pool: by usage or by UUID,
/// written back the same way; every other form refused in one line.
#[test]
fn iscsi_direct_pools_take_chap_auth() {
    use crate::auth::SecretRef;
    let xml = "<pool type='iscsi-direct'>\n  <name>san</name>\n  <source>\n    <host name='169.254.77.1'/>\n    \
               <device path='iqn.2026-01.org.vireo:t1'/>\n    <auth type='chap' username='vireo'>\n      \
               <secret usage='san-chap'/>\n    </auth>\n  </source>\n</pool>\n";
    let parsed = Pool::parse(xml).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let auth = parsed.pool.source.auth.clone().unwrap();
    assert_eq!(auth.username, "vireo");
    assert_eq!(auth.secret, SecretRef::Usage("san-chap".into()));
    let again = parsed.pool.to_xml(None);
    assert!(
        again.contains(
            "<auth type='chap' username='vireo'>\n      <secret usage='san-chap'/>\n    </auth>"
        ),
        "{again}"
    );
    assert_eq!(Pool::parse(&again).unwrap().pool, parsed.pool);
    let by_uuid = xml.replace(
        "usage='san-chap'",
        "uuid='c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6'",
    );
    let p = Pool::parse(&by_uuid).unwrap().pool;
    assert!(matches!(p.source.auth.unwrap().secret, SecretRef::Uuid(_)));
    // The kernel initiator's pool takes the same form.
    let kernel = xml.replace("iscsi-direct", "iscsi");
    let p = Pool::parse(&kernel).unwrap().pool;
    assert_eq!(p.source.auth.unwrap().username, "vireo");

    let base = "<pool type='iscsi-direct'><name>x</name><source><host name='h'/><device path='iqn.2026-01.a:b'/>AUTH</source></pool>";
    for (auth, says) in [
        ("<auth type='ceph' username='u'><secret usage='s'/></auth>", "auth type 'ceph'"),
        ("<auth username='u'><secret usage='s'/></auth>", "type="),
        ("<auth type='chap'><secret usage='s'/></auth>", "username="),
        ("<auth type='chap' username='u'/>", "needs a <secret"),
        ("<auth type='chap' username='u'><secret/></auth>", "usage='NAME' or uuid="),
        ("<auth type='chap' username='u'><secret usage='s' uuid='c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6'/></auth>", "not both"),
        ("<auth type='chap' username='u'><secret uuid='x'/></auth>", "not a UUID"),
        ("<auth type='chap' username='a@b'><secret usage='s'/></auth>", "username 'a@b'"),
        ("<auth type='chap' username='u'><key/></auth>", "<key>"),
        ("<auth type='chap' username='u'><secret usage='s'/></auth><auth type='chap' username='u'><secret usage='s'/></auth>", "more than once"),
    ] {
        let xml = base.replace("AUTH", auth);
        let e = refused(&xml);
        assert!(e.contains(says), "{xml}\n-> {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = refused(
        "<pool type='netfs'><name>x</name><source><host name='h'/><dir path='/e'/>\
         <auth type='chap' username='u'><secret usage='s'/></auth></source><target><path>/x</path></target></pool>",
    );
    assert!(e.contains("a netfs pool takes no <auth>"), "{e}");
}
