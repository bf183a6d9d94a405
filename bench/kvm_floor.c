/*
 * kvm_floor: the least any VMM with an in-kernel irqchip and PIT pays to
 * start and stop a VM on this host. It opens /dev/kvm, creates a VM with
 * 128 MiB of memory, the in-kernel IOAPIC/PIC/LAPIC (KVM_CREATE_IRQCHIP),
 * the PIT and one vCPU, and exits without running anything. Most of its
 * time is KVM tearing those down at exit. bench/startup.py prints it
 * beside vireo and QEMU so their figures can be read against it.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

int main(void)
{
        int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        int vm = ioctl(kvm, KVM_CREATE_VM, 0);
        void *mem = mmap(NULL, 128 << 20, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        struct kvm_userspace_memory_region region = {
                .memory_size = 128 << 20,
                .userspace_addr = (unsigned long)mem,
        };
        struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };

        if (kvm < 0 || vm < 0 || mem == MAP_FAILED ||
            ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) ||
            ioctl(vm, KVM_CREATE_IRQCHIP, 0) ||
            ioctl(vm, KVM_CREATE_PIT2, &pit) ||
            ioctl(vm, KVM_CREATE_VCPU, 0) < 0) {
                perror("kvm_floor");
                return 1;
        }
        return 0;
}
