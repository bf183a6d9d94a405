//! parse(to_xml(parse(x))) == parse(x) over many generated domains: every
//! combination drawn from a pool of element fragments, accepted or not.

use virtxml::Domain;

const TOP: &[&str] = &[
    "<uuid>4dea22b31d52d8f32516782e98ab3fa0</uuid>",
    "<title>t &amp; t</title>",
    "<description>  spaced\n text  </description>",
    "<currentMemory unit='M'>32</currentMemory>",
    "<vcpu cpuset='0-1'>2</vcpu>",
    "<features><acpi/><apic/><vmport state='off'/></features>",
    "<cpu mode='custom'><model>qemu64</model><feature name='x2apic'/><vendor>AMD</vendor></cpu>",
    "<cpu mode='host-model'><topology sockets='1' cores='2' threads='1'/></cpu>",
    "<on_crash>preserve</on_crash>",
    "<on_reboot>destroy</on_reboot>",
    "<metadata><a:b xmlns:a='urn:a' k='&quot;v&quot;'>x<c/>y</a:b></metadata>",
    "<pm><suspend-to-disk enabled='no'/></pm>",
    "<clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>",
];

const DEVICES: &[&str] = &[
    "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
    "<disk type='file'><driver type='qcow2' cache='writeback' io='native'/><source file='/a b.qcow2'/><target dev='vda'/><boot order='1'/></disk>",
    "<disk type='block'><driver name='qemu' type='raw' discard='ignore' cache='unsafe'/><source dev='/dev/x'/><target dev='vdb' bus='virtio'/><readonly/><serial>S 1</serial></disk>",
    "<interface type='ethernet'><target dev='tap0'/></interface>",
    "<interface type='bridge'><source bridge='br0'/><mac address='52:54:00:00:00:01'/><link state='up'/></interface>",
    "<interface type='network'><source network='default'/></interface>",
    "<serial type='unix'><source mode='connect' path='/s'/></serial>",
    "<console type='file'><source path='/c' append='off'/><target type='virtio'/></console>",
    "<console type='null'><target type='virtio'/></console>",
    "<rng model='virtio'><backend model='builtin'/></rng>",
    "<controller type='usb' model='none'/>",
    "<memballoon model='virtio'/>",
    "<input type='keyboard' bus='ps2'/>",
    "<channel type='pty'><target type='virtio' name='x'/></channel>",
];

/// A small deterministic generator, so a failure names its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn generated_domains_round_trip() {
    let mut accepted = 0;
    for seed in 0..400u64 {
        let mut rng = Lcg(seed);
        let mut xml =
            String::from("<domain type='kvm'><name>g</name><memory unit='MiB'>64</memory>");
        for f in TOP {
            if rng.next().is_multiple_of(3) {
                xml.push_str(f);
            }
        }
        xml.push_str(
            "<os><type>hvm</type><kernel>/k</kernel><cmdline>a=b  c</cmdline></os><devices>",
        );
        for f in DEVICES {
            if rng.next().is_multiple_of(3) {
                xml.push_str(f);
            }
        }
        xml.push_str("</devices></domain>");
        let Ok(first) = Domain::parse(&xml) else {
            continue;
        };
        accepted += 1;
        let written = first.domain.to_xml();
        let second =
            Domain::parse(&written).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{written}"));
        assert_eq!(first.domain, second.domain, "seed {seed}\n{xml}\n{written}");
    }
    // Most combinations are valid (a few pair a topology with the wrong
    // vCPU count); the test must not pass by rejecting everything.
    assert!(accepted > 200, "only {accepted} accepted");
}
