/*
 * kvm_floor_split: the least a VMM with a split irqchip and no PIT pays to
 * start and stop a VM on this host, i.e. what Vireo's default machine
 * cannot go below. Like kvm_floor.c, it opens /dev/kvm, creates a VM with
 * 128 MiB of memory and one vCPU and exits without running anything; but
 * instead of KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 it only enables
 * KVM_CAP_SPLIT_IRQCHIP (LAPICs in KVM, 24 routes reserved for an IOAPIC
 * the VMM emulates), whose teardown does not wait on the kernel the way
 * the in-kernel IOAPIC, PIC and PIT do.
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
        struct kvm_enable_cap split = {
                .cap = KVM_CAP_SPLIT_IRQCHIP,
                .args = { 24 },
        };

        if (kvm < 0 || vm < 0 || mem == MAP_FAILED ||
            ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) ||
            ioctl(vm, KVM_ENABLE_CAP, &split) ||
            ioctl(vm, KVM_CREATE_VCPU, 0) < 0) {
                perror("kvm_floor_split");
                return 1;
        }
        return 0;
}
