/*
 * libc.S: the C symbols Rust's core expects from libc on the
 * x86_64-unknown-linux-gnu target. In assembly because the compiler turns
 * a Rust byte loop named memcpy back into a call to memcpy.
 */
        .code64
        .text

/* memcpy(rdi dst, rsi src, rdx n) -> dst */
        .globl  memcpy
memcpy:
        mov     %rdi, %rax
        mov     %rdx, %rcx
        rep movsb
        ret

/* memmove(rdi dst, rsi src, rdx n) -> dst: copies backwards when dst lies
 * inside the source, so an overlap never reads bytes already overwritten. */
        .globl  memmove
memmove:
        mov     %rdi, %rax
        mov     %rdx, %rcx
        mov     %rdi, %r8
        sub     %rsi, %r8
        cmp     %rdx, %r8
        jb      1f
        rep movsb
        ret
1:      lea     -1(%rsi,%rdx), %rsi
        lea     -1(%rdi,%rdx), %rdi
        std
        rep movsb
        cld
        ret

/* memset(rdi dst, esi byte, rdx n) -> dst */
        .globl  memset
memset:
        mov     %rdi, %r8
        mov     %esi, %eax
        mov     %rdx, %rcx
        rep stosb
        mov     %r8, %rax
        ret

/* memcmp(rdi a, rsi b, rdx n) -> <0, 0 or >0, as the first differing
 * bytes compare unsigned; bcmp only needs zero versus non-zero. */
        .globl  memcmp, bcmp
memcmp:
bcmp:
        xor     %eax, %eax
        test    %rdx, %rdx
        jz      2f
1:      movzbl  (%rdi), %eax
        movzbl  (%rsi), %ecx
        sub     %ecx, %eax
        jnz     2f
        inc     %rdi
        inc     %rsi
        dec     %rdx
        jnz     1b
2:      ret

/* The prebuilt core refers to it; with panic=abort nothing unwinds. */
        .globl  rust_eh_personality
rust_eh_personality:
        ret

/* The prebuilt alloc refers to it from landing pads that never run here
 * (panic=abort); should one run anyway, stop loudly. */
        .globl  _Unwind_Resume
_Unwind_Resume:
        ud2
