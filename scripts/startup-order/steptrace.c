// steptrace OUT BINARY -- COMMAND...
//
// Runs COMMAND with every one of its threads single-stepped under
// ptrace and writes to OUT the distinct offsets, from BINARY's load
// address, of the instructions of BINARY that ran: one hexadecimal
// number per line. scripts/startup-order.sh turns them into the list of
// functions a start runs, which the linker then places side by side.
// Slow (a minute for a VMM start that takes 5 ms), and only for that.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

// One byte per byte of BINARY's mappings: at most this many.
#define SPAN (256u << 20)

static uint64_t base, end;

// BINARY's lowest and highest mapped addresses in process `pid`.
static void find_mappings(pid_t pid, const char *binary) {
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char *name = strchr(line, '/');
        if (!name || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
            continue;
        name[strcspn(name, "\n")] = 0;
        if (strcmp(name, binary) != 0)
            continue;
        if (!base || lo < base)
            base = lo;
        if (hi > end)
            end = hi;
    }
    fclose(f);
    if (!base || end - base > SPAN) {
        fprintf(stderr, "steptrace: %s is not mapped (or too large) after exec\n", binary);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: steptrace OUT BINARY -- COMMAND...\n");
        return 2;
    }
    const char *out = argv[1];
    char binary[4096];
    if (!realpath(argv[2], binary)) {
        perror(argv[2]);
        return 1;
    }
    uint8_t *ran = calloc(SPAN, 1);
    if (!ran) {
        perror("calloc");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        execvp(argv[4], argv + 4);
        perror(argv[4]);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    ptrace(PTRACE_SETOPTIONS, child, 0,
           PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC |
               PTRACE_O_EXITKILL);
    ptrace(PTRACE_CONT, child, 0, 0);
    int stepping = 0, exit_code = 1;
    long steps = 0;
    for (;;) {
        pid_t t = waitpid(-1, &status, __WALL);
        if (t < 0)
            break;
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            if (t == child)
                exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            continue;
        }
        int sig = WSTOPSIG(status), event = status >> 16, deliver = 0;
        if (event == PTRACE_EVENT_EXEC && !stepping) {
            // Stepping starts at the exec: the dynamic loader's work for
            // BINARY is part of a start.
            find_mappings(t, binary);
            stepping = 1;
        } else if (event) {
            // A new thread or process stops by itself with SIGSTOP.
        } else if (sig == SIGTRAP) {
            struct user_regs_struct regs;
            if (stepping && ptrace(PTRACE_GETREGS, t, 0, &regs) == 0 && regs.rip >= base &&
                regs.rip < end)
                ran[regs.rip - base] = 1;
            steps++;
        } else if (sig != SIGSTOP) {
            deliver = sig;
        }
        ptrace(stepping ? PTRACE_SINGLESTEP : PTRACE_CONT, t, 0, (void *)(long)deliver);
    }
    FILE *f = fopen(out, "w");
    if (!f) {
        perror(out);
        return 1;
    }
    for (uint64_t i = 0; i < end - base; i++)
        if (ran[i])
            fprintf(f, "%lx\n", (unsigned long)i);
    fclose(f);
    fprintf(stderr, "steptrace: %ld steps; the command exited with %d\n", steps, exit_code);
    return exit_code;
}
