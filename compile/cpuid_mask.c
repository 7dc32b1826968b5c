/* Hide CPU features from a process, so a runtime that picks its kernels by CPUID (ONNX Runtime's MLAS, oneDNN,
 * OpenBLAS, numpy) runs the code it would run on a CPU without them: an AVX2-only box, measured on an AVX-512 one.
 *
 * LD_PRELOAD this library with EDGECV_CPUID_MASK="LEAF.SUBLEAF.REG=HEXBITS,..." (REG: eax ebx ecx edx; the bits to
 * clear in what CPUID returns). Its constructor turns on CPUID faulting for the process (Linux arch_prctl
 * ARCH_SET_CPUID 0: the CPU must support it, /proc/cpuinfo flag cpuid_fault; threads and children inherit it until
 * exec), so every CPUID instruction traps with SIGSEGV; the handler runs the real CPUID with faulting briefly off,
 * clears the masked bits and resumes after the instruction. sigaction() and signal() are wrapped so a handler the
 * program installs for SIGSEGV later (Python's faulthandler, TVM's) is called for every other fault instead of
 * replacing this one.
 * What ran before the constructor (the dynamic loader's own CPU checks, glibc's string functions) saw the real CPU.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_MASKS 16

struct mask { unsigned leaf, subleaf, reg; uint32_t bits; };
static struct mask masks[MAX_MASKS];
static int mask_count;
static struct sigaction chained;  /* the program's own SIGSEGV handler, if it set one */
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static void parse_masks(const char *spec) {
    static const char *names[] = {"eax", "ebx", "ecx", "edx"};
    while (spec && *spec && mask_count < MAX_MASKS) {
        struct mask m;
        char reg[4] = {0};
        int used = 0;
        if (sscanf(spec, "%u.%u.%3[a-z]=%x%n", &m.leaf, &m.subleaf, reg, &m.bits, &used) != 4) return;
        for (m.reg = 0; m.reg < 4 && strcmp(reg, names[m.reg]) != 0; m.reg++) {}
        if (m.reg < 4) masks[mask_count++] = m;
        spec += used;
        if (*spec == ',') spec++;
    }
}

static void to_chained(int sig, siginfo_t *info, void *context) {
    if (chained.sa_flags & SA_SIGINFO) {
        if (chained.sa_sigaction) { chained.sa_sigaction(sig, info, context); return; }
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN && chained.sa_handler) {
        chained.sa_handler(sig);
        return;
    }
    /* the default action: restore it, and the faulting instruction faults again, fatally */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL);
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)regs[REG_RIP];
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) { to_chained(sig, info, context); return; }
    unsigned leaf = (unsigned)regs[REG_RAX], subleaf = (unsigned)regs[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    for (int i = 0; i < mask_count; i++)
        if (masks[i].leaf == leaf && masks[i].subleaf == subleaf) r[masks[i].reg] &= ~masks[i].bits;
    regs[REG_RAX] = r[0]; regs[REG_RBX] = r[1]; regs[REG_RCX] = r[2]; regs[REG_RDX] = r[3];
    regs[REG_RIP] += 2;
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || mask_count == 0) return real_sigaction(sig, act, old);
    if (old) *old = chained;
    if (act) chained = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {  /* (glibc's signal() doesn't go through sigaction()) */
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

__attribute__((constructor)) static void cpuid_mask_init(void) {
    real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    parse_masks(getenv("EDGECV_CPUID_MASK"));
    if (mask_count == 0) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    memset(&chained, 0, sizeof chained);
    chained.sa_handler = SIG_DFL;
    if (real_sigaction(SIGSEGV, &sa, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) mask_count = 0;
}
